//! Parsing of `#[outbox(...)]` attributes on the struct or enum, its variants and its
//! fields, and of the few `#[serde(...)]` settings that change what an event enum's
//! payload looks like.

use std::collections::BTreeSet;

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ExprLit, Lit, LitStr, Path};

use crate::ctxt::Ctxt;

const CONTAINER_KEYS: &str =
    "`type`, `version`, `aggregate`, `partition_key`, `tombstone`, `crate`";
const FIELD_KEYS: &str = "`aggregate`, `partition_key`";

/// `#[outbox(...)]` on the struct itself, on an enum, or on one of its variants.
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
    /// `tombstone`: the event is published with a null value.
    pub(crate) tombstone: Option<Span>,
    /// `crate = "path"`: where the `outbox` crate is, for users who renamed it.
    pub(crate) krate: Option<Path>,
    /// The `crate` key itself, for errors where it does not belong.
    pub(crate) krate_key: Option<Path>,
    /// Every key that was written.
    seen: BTreeSet<String>,
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
        let mut seen = Seen::default();
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
                } else if meta.path.is_ident("tombstone") {
                    if seen.first(cx, &meta) {
                        out.tombstone = Some(meta.path.span());
                        return no_value(cx, &meta, "attribute");
                    }
                    return skip_value(&meta);
                } else if meta.path.is_ident("crate") {
                    out.krate_key = Some(meta.path.clone());
                    if seen.first(cx, &meta) {
                        if let Some(lit) = string_value(cx, &meta)? {
                            match lit.parse::<Path>() {
                                Ok(path) => out.krate = Some(path),
                                Err(_) => cx.error_spanned_by(
                                    &lit,
                                    format!(
                                        "`crate` expects a path, e.g. `crate = \"::outbox\"`, found {:?}",
                                        lit.value()
                                    ),
                                ),
                            }
                        }
                        return Ok(());
                    }
                    return skip_value(&meta);
                } else {
                    cx.push(syn::Error::new_spanned(
                        &meta.path,
                        format!(
                            "unknown outbox attribute `{}`; expected one of {CONTAINER_KEYS}",
                            path_to_string(&meta.path)
                        ),
                    ));
                    return skip_value(&meta);
                };
                if seen.first(cx, &meta) {
                    *slot = string_value(cx, &meta)?;
                    Ok(())
                } else {
                    skip_value(&meta)
                }
            });
            if let Err(error) = result {
                cx.push(error);
            }
        }
        out.seen = seen.0;
        out
    }

    /// Whether `key` was written, even if its value was malformed (so the checks do
    /// not also report it as missing).
    pub(crate) fn was_given(&self, key: &str) -> bool {
        self.seen.contains(key)
    }

    /// Whether any key was written.
    pub(crate) fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

impl Field {
    pub(crate) fn parse(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = Field::default();
        let mut seen = Seen::default();
        for attr in outbox_attrs(attrs) {
            let result = attr.parse_nested_meta(|meta| {
                let slot = if meta.path.is_ident("aggregate") {
                    &mut out.aggregate
                } else if meta.path.is_ident("partition_key") {
                    &mut out.partition_key
                } else {
                    cx.push(syn::Error::new_spanned(
                        &meta.path,
                        format!(
                            "unknown outbox field attribute `{}`; expected one of {FIELD_KEYS}",
                            path_to_string(&meta.path)
                        ),
                    ));
                    return skip_value(&meta);
                };
                if !seen.first(cx, &meta) {
                    return skip_value(&meta);
                }
                // The role is taken even when a value was wrongly given, so the checks
                // do not also report it as missing.
                *slot = Some(meta.path.span());
                no_value(cx, &meta, "field attribute")
            });
            if let Err(error) = result {
                cx.push(error);
            }
        }
        out
    }
}

/// The keys read so far in one attribute list, to report repeats.
#[derive(Default)]
struct Seen(BTreeSet<String>);

impl Seen {
    /// Records the key; `false` (with an error at the repeat) if it came before.
    fn first(&mut self, cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> bool {
        let key = path_to_string(&meta.path);
        if self.0.insert(key.clone()) {
            return true;
        }
        cx.error_spanned_by(&meta.path, format!("duplicate outbox attribute `{key}`"));
        false
    }
}

/// Reports the `#[serde(...)]` settings of an enum that make serde write something
/// other than the variant's content under the variant's name (`tag`, `content`,
/// `untagged`), or go through another type (`from`, `try_from`, `into`, `remote`):
/// an event's payload is the variant's content alone, its type travels in the
/// `event_type` header, and decoding hands serde's impl derived on the enum the
/// variant by its position.
pub(crate) fn check_enum_representation(cx: &mut Ctxt, attrs: &[Attribute]) {
    const REFUSED: [&str; 7] = [
        "tag", "content", "untagged", "from", "try_from", "into", "remote",
    ];
    for_each_serde_key(attrs, |key| {
        if REFUSED.iter().any(|k| key.is_ident(k)) {
            cx.error_spanned_by(
                key,
                format!(
                    "OutboxEvent needs serde's default representation of an enum, derived on the enum itself, without `#[serde({})]`: the payload is the variant's content alone, and the event type travels in the `event_type` header",
                    path_to_string(key)
                ),
            );
        }
    });
}

/// Which ways serde leaves a variant out.
#[derive(Clone, Copy, Default)]
pub(crate) struct SerdeSkips {
    /// `#[serde(skip)]` or `#[serde(skip_deserializing)]`.
    pub(crate) deserializing: bool,
    /// `#[serde(skip)]` or `#[serde(skip_serializing)]`.
    pub(crate) serializing: bool,
}

/// Which ways serde leaves the variant out. A `#[serde(untagged)]` variant is
/// reported.
pub(crate) fn serde_skips(cx: &mut Ctxt, attrs: &[Attribute]) -> SerdeSkips {
    let mut skips = SerdeSkips::default();
    for_each_serde_key(attrs, |key| {
        if key.is_ident("skip") {
            skips.deserializing = true;
            skips.serializing = true;
        } else if key.is_ident("skip_deserializing") {
            skips.deserializing = true;
        } else if key.is_ident("skip_serializing") {
            skips.serializing = true;
        } else if key.is_ident("untagged") {
            cx.error_spanned_by(
                key,
                "OutboxEvent needs every variant tagged by serde, without `#[serde(untagged)]`: decoding picks the variant by the event's type and version",
            );
        }
    });
    skips
}

/// Calls `f` with each key of the `#[serde(...)]` attributes. Malformed ones are
/// left to serde to report.
fn for_each_serde_key(attrs: &[Attribute], mut f: impl FnMut(&Path)) {
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            f(&meta.path);
            skip_value(&meta)
        });
    }
}

fn outbox_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|attr| attr.path().is_ident("outbox"))
}

/// Reads `= "string"`. A missing or non-string value is recorded as an error and
/// yields `None`, so parsing carries on with the next key.
fn string_value(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<LitStr>> {
    let key = path_to_string(&meta.path);
    if !meta.input.peek(syn::Token![=]) {
        cx.error_spanned_by(
            &meta.path,
            format!("`{key}` expects a string value: `{key} = \"...\"`"),
        );
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

/// Reports (and skips) a value given to a key that is a flag, e.g. `tombstone`.
fn no_value(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>, what: &str) -> syn::Result<()> {
    if meta.input.is_empty() || meta.input.peek(syn::Token![,]) {
        return Ok(());
    }
    let key = path_to_string(&meta.path);
    cx.error_spanned_by(
        &meta.path,
        format!("the {what} `{key}` takes no value; write `#[outbox({key})]`"),
    );
    skip_value(meta)
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
