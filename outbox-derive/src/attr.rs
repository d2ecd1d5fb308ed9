//! Parsing of `#[outbox(...)]` attributes on the struct and on its fields.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, ExprLit, Lit, LitStr, Path};

use crate::ctxt::Ctxt;

const CONTAINER_KEYS: &str = "`type`, `version`, `aggregate`, `partition_key`, `crate`";
const FIELD_KEYS: &str = "`aggregate`, `partition_key`";

/// `#[outbox(...)]` on the struct itself.
#[derive(Default)]
pub(crate) struct Container {
    /// `type = "user.registered"`: required.
    pub(crate) event_type: Option<LitStr>,
    /// `version = "v2"`: defaults to `"v1"`.
    pub(crate) version: Option<LitStr>,
    /// `aggregate = "field"`: the field whose value is the aggregate id.
    pub(crate) aggregate: Option<LitStr>,
    /// `partition_key = "field"`: the field whose value is the default partition key.
    pub(crate) partition_key: Option<LitStr>,
    /// `crate = "path"`: where the `outbox` crate is, for users who renamed it.
    pub(crate) krate: Option<Path>,
}

/// `#[outbox(...)]` on a field.
#[derive(Default)]
pub(crate) struct Field {
    /// `#[outbox(aggregate)]`: this field is the aggregate id.
    pub(crate) aggregate: Option<Span>,
    /// `#[outbox(partition_key)]`: this field is the default partition key.
    pub(crate) partition_key: Option<Span>,
}

impl Container {
    pub(crate) fn parse(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = Container::default();
        for attr in outbox_attrs(attrs) {
            let result = attr.parse_nested_meta(|meta| {
                let slot = if meta.path.is_ident("type") {
                    &mut out.event_type
                } else if meta.path.is_ident("version") {
                    &mut out.version
                } else if meta.path.is_ident("aggregate") {
                    &mut out.aggregate
                } else if meta.path.is_ident("partition_key") {
                    &mut out.partition_key
                } else if meta.path.is_ident("crate") {
                    if let Some(lit) = string_value(cx, &meta, "crate")? {
                        match lit.parse::<Path>() {
                            Ok(path) => set_once(cx, &meta, &mut out.krate, path),
                            Err(_) => cx.error_spanned_by(
                                &lit,
                                format!("`crate` expects a path, e.g. `crate = \"::outbox\"`, found {:?}", lit.value()),
                            ),
                        }
                    }
                    return Ok(());
                } else {
                    cx.push(meta.error(format!(
                        "unknown outbox attribute `{}`; expected one of {CONTAINER_KEYS}",
                        path_to_string(&meta.path)
                    )));
                    return skip_value(&meta);
                };
                let key = path_to_string(&meta.path);
                if let Some(lit) = string_value(cx, &meta, &key)? {
                    set_once(cx, &meta, slot, lit);
                }
                Ok(())
            });
            if let Err(error) = result {
                cx.push(error);
            }
        }
        out
    }
}

impl Field {
    pub(crate) fn parse(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = Field::default();
        for attr in outbox_attrs(attrs) {
            let result = attr.parse_nested_meta(|meta| {
                let slot = if meta.path.is_ident("aggregate") {
                    &mut out.aggregate
                } else if meta.path.is_ident("partition_key") {
                    &mut out.partition_key
                } else {
                    cx.push(meta.error(format!(
                        "unknown outbox field attribute `{}`; expected one of {FIELD_KEYS}",
                        path_to_string(&meta.path)
                    )));
                    return skip_value(&meta);
                };
                if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                    cx.push(meta.error(format!(
                        "the field attribute `{}` takes no value; write `#[outbox({})]`",
                        path_to_string(&meta.path),
                        path_to_string(&meta.path)
                    )));
                    return skip_value(&meta);
                }
                let span = meta.path.get_ident().map_or_else(Span::call_site, |i| i.span());
                set_once(cx, &meta, slot, span);
                Ok(())
            });
            if let Err(error) = result {
                cx.push(error);
            }
        }
        out
    }
}

fn outbox_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|attr| attr.path().is_ident("outbox"))
}

/// Stores `value` unless the key was already given, which is an error at the repeat.
fn set_once<T>(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>, slot: &mut Option<T>, value: T) {
    if slot.is_some() {
        cx.push(meta.error(format!(
            "duplicate outbox attribute `{}`",
            path_to_string(&meta.path)
        )));
    } else {
        *slot = Some(value);
    }
}

/// Reads `= "string"`. A missing or non-string value is recorded as an error and
/// yields `None`, so parsing carries on with the next key.
fn string_value(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<Option<LitStr>> {
    if !meta.input.peek(syn::Token![=]) {
        cx.push(meta.error(format!("`{key}` expects a string value: `{key} = \"...\"`")));
        skip_value(meta)?;
        return Ok(None);
    }
    let expr: Expr = meta.value()?.parse()?;
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(Some(lit)),
        other => {
            cx.error_spanned_by(
                &other,
                format!("`{key}` expects a string literal: `{key} = \"...\"`"),
            );
            Ok(None)
        }
    }
}

/// Consumes whatever follows an unknown or malformed key (`= expr` or `(...)`), so the
/// rest of the attribute is still read.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _: proc_macro2::Group = meta.input.parse()?;
    }
    Ok(())
}

fn path_to_string(path: &Path) -> String {
    path.segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}
