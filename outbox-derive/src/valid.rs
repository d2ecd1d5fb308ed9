//! Checks across attributes and fields, producing the event to expand.

use std::collections::BTreeMap;

use proc_macro2::Span;
use syn::{Ident, LitStr, Path, Type};

use crate::ast::{Data, Field, Input, Variant, VariantShape};
use crate::attr;
use crate::ctxt::Ctxt;

/// `outbox::DEFAULT_EVENT_VERSION`, to tell two variants apart when one of them leaves
/// its version out. The `outbox` crate's derive tests check that the two agree.
const DEFAULT_EVENT_VERSION: &str = "v1";

/// A checked input: everything the expansion needs, each part known to be valid.
pub(crate) struct Event<'a> {
    pub(crate) input: &'a Input<'a>,
    pub(crate) krate: Option<&'a Path>,
    pub(crate) kind: Kind<'a>,
}

/// A struct is one event type; an enum is one per variant.
pub(crate) enum Kind<'a> {
    Struct(Meta<'a>),
    Enum(Vec<VariantEvent<'a>>),
}

/// What describes one event type: its type, version and keys.
pub(crate) struct Meta<'a> {
    pub(crate) event_type: &'a LitStr,
    pub(crate) version: Option<&'a LitStr>,
    pub(crate) aggregate: &'a Field<'a>,
    pub(crate) partition_key: Option<&'a Field<'a>>,
    /// Published with a null value: its fields are its keys alone.
    pub(crate) tombstone: bool,
}

/// One variant of an event enum.
pub(crate) struct VariantEvent<'a> {
    pub(crate) variant: &'a Variant<'a>,
    pub(crate) kind: VariantKind<'a>,
}

/// How a variant is described.
pub(crate) enum VariantKind<'a> {
    /// By its own attributes, over its named fields.
    Named(Meta<'a>),
    /// By the OutboxEvent impl of the type it wraps.
    Newtype(&'a Type),
}

/// The struct or the variant whose attributes are checked, for error messages.
struct Owner<'a> {
    ident: &'a Ident,
    /// "struct" or "variant".
    what: &'static str,
}

/// Checks `input`, recording every problem in `cx`. Returns the event only when
/// nothing was wrong with it.
pub(crate) fn check<'a>(cx: &mut Ctxt, input: &'a Input<'a>) -> Option<Event<'a>> {
    let kind = match &input.data {
        Data::Struct(fields) => {
            let owner = Owner {
                ident: input.ident,
                what: "struct",
            };
            check_meta(cx, &input.attrs, fields, &owner).map(Kind::Struct)
        }
        Data::Enum(variants) => check_enum(cx, input, variants).map(Kind::Enum),
        Data::Other => {
            // The shape error is already recorded; check what can be checked alone.
            event_type(cx, &input.attrs, input.ident);
            None
        }
    };
    Some(Event {
        input,
        krate: input.attrs.krate.as_ref(),
        kind: kind?,
    })
}

fn check_enum<'a>(
    cx: &mut Ctxt,
    input: &'a Input<'a>,
    variants: &'a [Variant<'a>],
) -> Option<Vec<VariantEvent<'a>>> {
    let attrs = &input.attrs;
    let per_variant = [
        ("type", attrs.event_type.as_ref()),
        ("version", attrs.version.as_ref()),
        ("aggregate", attrs.aggregate.as_ref()),
        ("partition_key", attrs.partition_key.as_ref()),
    ];
    if let Some(span) = attrs.tombstone {
        cx.push(syn::Error::new(
            span,
            "on an enum, `tombstone` describes one variant: write `#[outbox(tombstone)]` on each variant that is one",
        ));
    }
    for (key, lit) in per_variant {
        if attrs.was_given(key) {
            let message = format!(
                "on an enum, `{key}` describes one variant: write `#[outbox({key} = ...)]` on each variant instead of on the enum"
            );
            match lit {
                Some(lit) => cx.error_spanned_by(lit, message),
                None => cx.error_spanned_by(input.ident, message),
            }
        }
    }
    if variants.is_empty() {
        cx.error_spanned_by(
            input.ident,
            format!(
                "the enum `{}` has no variants: an event enum needs one variant per event type",
                input.ident
            ),
        );
        return None;
    }

    let mut out = Vec::with_capacity(variants.len());
    let mut complete = true;
    for variant in variants {
        if let Some(key) = &variant.attrs.krate_key {
            cx.error_spanned_by(
                key,
                "`crate` applies to the whole enum: write `#[outbox(crate = \"...\")]` on the enum",
            );
        }
        let kind = match &variant.shape {
            VariantShape::Named(fields) => {
                let owner = Owner {
                    ident: variant.ident,
                    what: "variant",
                };
                check_meta(cx, &variant.attrs, fields, &owner).map(VariantKind::Named)
            }
            VariantShape::Newtype(ty) => {
                if !variant.attrs.is_empty() {
                    cx.error_spanned_by(
                        variant.ident,
                        format!(
                            "the variant `{}` wraps one value, whose own OutboxEvent impl gives its type, version and keys: remove `#[outbox(...)]` from the variant, or give the variant named fields",
                            variant.ident
                        ),
                    );
                }
                Some(VariantKind::Newtype(ty))
            }
            VariantShape::Other => None,
        };
        match kind {
            Some(kind) => out.push(VariantEvent { variant, kind }),
            None => complete = false,
        }
    }
    distinct_types(cx, &out);
    complete.then_some(out)
}

/// Reports two variants that describe the same type and version: a received event
/// could not be decoded into one of them rather than the other.
fn distinct_types(cx: &mut Ctxt, variants: &[VariantEvent<'_>]) {
    let mut seen: BTreeMap<(String, String), &Ident> = BTreeMap::new();
    for event in variants {
        let VariantKind::Named(meta) = &event.kind else {
            continue;
        };
        let version = meta
            .version
            .map_or_else(|| DEFAULT_EVENT_VERSION.to_owned(), LitStr::value);
        let key = (meta.event_type.value(), version);
        if let Some(first) = seen.get(&key) {
            cx.error_spanned_by(
                meta.event_type,
                format!(
                    "the variants `{first}` and `{}` are both event type {:?} version {:?}: a received event could not be decoded into one rather than the other",
                    event.variant.ident, key.0, key.1
                ),
            );
        } else {
            seen.insert(key, event.variant.ident);
        }
    }
}

/// Checks the attributes that describe one event type over `fields`.
fn check_meta<'a>(
    cx: &mut Ctxt,
    attrs: &'a attr::Container,
    fields: &'a [Field<'a>],
    owner: &Owner<'_>,
) -> Option<Meta<'a>> {
    let event_type = event_type(cx, attrs, owner.ident);
    let aggregate = field_role(
        cx,
        fields,
        owner,
        attrs.aggregate.as_ref(),
        |field| field.attrs.aggregate,
        "aggregate",
    );
    let aggregate_given =
        attrs.was_given("aggregate") || fields.iter().any(|f| f.attrs.aggregate.is_some());
    if !aggregate_given {
        cx.error_spanned_by(
            owner.ident,
            format!(
                "missing aggregate: name the field that identifies the aggregate with `#[outbox(aggregate = \"user_id\")]` on the {}, or mark the field `#[outbox(aggregate)]`",
                owner.what
            ),
        );
    }
    let partition_key = field_role(
        cx,
        fields,
        owner,
        attrs.partition_key.as_ref(),
        |field| field.attrs.partition_key,
        "partition_key",
    );
    let aggregate = aggregate?;
    let tombstone = attrs.tombstone.is_some();
    if tombstone {
        keys_alone(cx, fields, owner, aggregate, partition_key);
    }
    Some(Meta {
        event_type: event_type?,
        version: attrs.version.as_ref(),
        aggregate,
        partition_key,
        tombstone,
    })
}

/// Reports the fields of a tombstone that are not its keys: a tombstone is published
/// with a null value, so they would never reach anyone (and a consumer reads it back
/// from its keys alone).
fn keys_alone(
    cx: &mut Ctxt,
    fields: &[Field<'_>],
    owner: &Owner<'_>,
    aggregate: &Field<'_>,
    partition_key: Option<&Field<'_>>,
) {
    let is_key = |field: &Field<'_>| {
        field.ident == aggregate.ident || partition_key.is_some_and(|key| field.ident == key.ident)
    };
    for field in fields.iter().filter(|field| !is_key(field)) {
        cx.error_spanned_by(
            field.ident,
            format!(
                "the {} `{}` is a tombstone, published with a null value: its field `{}` would never be published; a tombstone holds its aggregate field (and its partition key's) alone",
                owner.what, owner.ident, field.ident
            ),
        );
    }
}

/// The required `type` (and the optional `version`), each non-empty.
fn event_type<'a>(cx: &mut Ctxt, attrs: &'a attr::Container, ident: &Ident) -> Option<&'a LitStr> {
    if let Some(version) = &attrs.version {
        non_empty(cx, version, "version");
    }
    match &attrs.event_type {
        Some(lit) => {
            non_empty(cx, lit, "type");
            Some(lit)
        }
        None if attrs.was_given("type") => None,
        None => {
            cx.error_spanned_by(
                ident,
                "missing `#[outbox(type = \"...\")]`: every event needs a type, e.g. `#[outbox(type = \"user.registered\")]`",
            );
            None
        }
    }
}

fn non_empty(cx: &mut Ctxt, lit: &LitStr, key: &str) {
    if lit.value().trim().is_empty() {
        cx.error_spanned_by(lit, format!("`{key}` must not be empty"));
    }
}

/// Finds the field that plays `role` (the aggregate id or the partition key), named
/// either on the struct or variant (`role = "field"`) or by marking the field
/// `#[outbox(role)]`.
fn field_role<'a>(
    cx: &mut Ctxt,
    fields: &'a [Field<'a>],
    owner: &Owner<'_>,
    named: Option<&LitStr>,
    marker: impl Fn(&Field<'_>) -> Option<Span>,
    role: &str,
) -> Option<&'a Field<'a>> {
    let mut marked = fields
        .iter()
        .filter_map(|field| Some((field, marker(field)?)));
    let first_marked = marked.next();
    for (_, span) in marked {
        cx.push(syn::Error::new(
            span,
            format!("only one field can be marked `#[outbox({role})]`"),
        ));
    }
    match (named, first_marked) {
        (Some(lit), marked) => {
            if let Some((_, span)) = marked {
                cx.push(syn::Error::new(
                    span,
                    format!(
                        "`{role}` is already named on the {} (`{role} = {:?}`); keep one of the two",
                        owner.what,
                        lit.value()
                    ),
                ));
            }
            let name = lit.value();
            let found = fields.iter().find(|field| field.ident == name.as_str());
            if found.is_none() {
                let listed = fields
                    .iter()
                    .map(|field| format!("`{}`", field.ident))
                    .collect::<Vec<_>>()
                    .join(", ");
                let owner_name = match owner.what {
                    "struct" => format!("`{}`", owner.ident),
                    what => format!("the {what} `{}`", owner.ident),
                };
                cx.error_spanned_by(
                    lit,
                    format!(
                        "`{role}` names the field `{name}`, but {owner_name} has no such field; its fields are {listed}"
                    ),
                );
            }
            found
        }
        (None, Some((field, _))) => Some(field),
        (None, None) => None,
    }
}
