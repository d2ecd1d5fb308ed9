//! Checks across attributes and fields, producing the event to expand.

use proc_macro2::Span;
use syn::{LitStr, Path};

use crate::ast::{Data, Field, Input};
use crate::ctxt::Ctxt;

/// A checked event: everything the expansion needs, each part known to be valid.
pub(crate) struct Event<'a> {
    pub(crate) input: &'a Input<'a>,
    pub(crate) event_type: &'a LitStr,
    pub(crate) version: Option<&'a LitStr>,
    pub(crate) aggregate: &'a Field<'a>,
    pub(crate) partition_key: Option<&'a Field<'a>>,
    pub(crate) krate: Option<&'a Path>,
}

/// Checks `input`, recording every problem in `cx`. Returns the event only when
/// nothing was wrong with it.
pub(crate) fn check<'a>(cx: &mut Ctxt, input: &'a Input<'a>) -> Option<Event<'a>> {
    let attrs = &input.attrs;
    let event_type = match &attrs.event_type {
        Some(lit) => {
            non_empty(cx, lit, "type");
            Some(lit)
        }
        None if attrs.was_given("type") => None,
        None => {
            cx.error_spanned_by(
                input.ident,
                "missing `#[outbox(type = \"...\")]`: every event needs a type, e.g. `#[outbox(type = \"user.registered\")]`",
            );
            None
        }
    };
    if let Some(version) = &attrs.version {
        non_empty(cx, version, "version");
    }
    if matches!(input.data, Data::Other) {
        // The shape error is already recorded; field checks would only add noise.
        return None;
    }
    let aggregate = field_role(
        cx,
        input,
        attrs.aggregate.as_ref(),
        |field| field.attrs.aggregate,
        "aggregate",
    );
    let aggregate_given =
        attrs.was_given("aggregate") || input.fields().iter().any(|f| f.attrs.aggregate.is_some());
    if !aggregate_given {
        cx.error_spanned_by(
            input.ident,
            "missing aggregate: name the field that identifies the aggregate with `#[outbox(aggregate = \"user_id\")]` on the struct, or mark the field `#[outbox(aggregate)]`",
        );
    }
    let partition_key = field_role(
        cx,
        input,
        attrs.partition_key.as_ref(),
        |field| field.attrs.partition_key,
        "partition_key",
    );
    Some(Event {
        input,
        event_type: event_type?,
        version: attrs.version.as_ref(),
        aggregate: aggregate?,
        partition_key,
        krate: attrs.krate.as_ref(),
    })
}

fn non_empty(cx: &mut Ctxt, lit: &LitStr, key: &str) {
    if lit.value().trim().is_empty() {
        cx.error_spanned_by(lit, format!("`{key}` must not be empty"));
    }
}

/// Finds the field that plays `role` (the aggregate id or the partition key), named
/// either on the struct (`role = "field"`) or by marking the field `#[outbox(role)]`.
fn field_role<'a>(
    cx: &mut Ctxt,
    input: &'a Input<'a>,
    named: Option<&LitStr>,
    marker: impl Fn(&Field<'_>) -> Option<Span>,
    role: &str,
) -> Option<&'a Field<'a>> {
    let mut marked = input
        .fields()
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
                    format!("`{role}` is already named on the struct (`{role} = {:?}`); keep one of the two", lit.value()),
                ));
            }
            let name = lit.value();
            let found = input
                .fields()
                .iter()
                .find(|field| field.ident == name.as_str());
            if found.is_none() {
                let fields = input
                    .fields()
                    .iter()
                    .map(|field| format!("`{}`", field.ident))
                    .collect::<Vec<_>>()
                    .join(", ");
                cx.error_spanned_by(
                    lit,
                    format!(
                        "`{role}` names the field `{name}`, but `{}` has no such field; its fields are {fields}",
                        input.ident
                    ),
                );
            }
            found
        }
        (None, Some((field, _))) => Some(field),
        (None, None) => None,
    }
}
