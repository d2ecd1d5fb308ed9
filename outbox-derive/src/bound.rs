//! The where clauses of the two impls: what the event's own type and the types of its
//! fields and newtype variants must implement.
//!
//! Decoding needs `Deserialize`, which an event that is only ever stored may lack: its
//! bound is written `for<'__outbox_de>`, which the compiler checks where the impl is
//! used rather than where it is written, so such an event simply does not implement
//! `DecodeEvent`.

use proc_macro2::TokenStream;
use syn::spanned::Spanned;
use syn::{Generics, WhereClause};

use crate::valid::{Meta, VariantEvent, VariantKind};

/// Bounds a struct's impls: the struct itself is serialized and deserialized, and the
/// fields it displays as keys implement `Display`.
pub(crate) fn bound_struct(
    krate: &TokenStream,
    meta: &Meta<'_>,
    event: &mut Generics,
    decode: &mut Generics,
) {
    let clause = event.make_where_clause();
    clause
        .predicates
        .push(syn::parse_quote!(Self: #krate::__private::serde::Serialize));
    display_bounds(clause, meta);
    decode
        .make_where_clause()
        .predicates
        .push(syn::parse_quote!(for<'__outbox_de> Self: #krate::__private::serde::Deserialize<'__outbox_de>));
}

/// Bounds an enum's impls: a newtype variant's type is an event itself; a named
/// variant's displayed fields implement `Display`, and the enum is serialized and
/// deserialized when it has any named variant.
pub(crate) fn bound_enum(
    krate: &TokenStream,
    variants: &[VariantEvent<'_>],
    event: &mut Generics,
    decode: &mut Generics,
) {
    let event_clause = event.make_where_clause();
    let decode_clause = decode.make_where_clause();
    let mut named = false;
    for variant in variants {
        match &variant.kind {
            VariantKind::Named(meta) => {
                named = true;
                display_bounds(event_clause, meta);
            }
            VariantKind::Newtype(ty) => {
                event_clause
                    .predicates
                    .push(syn::parse_quote_spanned!(ty.span()=> #ty: #krate::OutboxEvent));
                decode_clause.predicates.push(
                    syn::parse_quote_spanned!(ty.span()=> for<'__outbox_a> #ty: #krate::DecodeEvent),
                );
            }
        }
    }
    if named {
        event_clause
            .predicates
            .push(syn::parse_quote!(Self: #krate::__private::serde::Serialize));
        decode_clause
            .predicates
            .push(syn::parse_quote!(for<'__outbox_de> Self: #krate::__private::serde::Deserialize<'__outbox_de>));
    }
}

/// `Display` for the types of the aggregate id's field and of the partition key's,
/// each bound spanned at that type.
fn display_bounds(clause: &mut WhereClause, meta: &Meta<'_>) {
    let mut displayed = vec![meta.aggregate];
    displayed.extend(meta.partition_key);
    for field in displayed {
        let ty = field.ty;
        clause
            .predicates
            .push(syn::parse_quote_spanned!(ty.span()=> #ty: ::core::fmt::Display));
    }
}
