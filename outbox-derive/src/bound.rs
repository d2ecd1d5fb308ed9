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

/// Bounds a struct's impls: the struct itself is serialized (unless it is a tombstone,
/// whose payload is null) and deserialized, and the fields it displays as keys
/// implement `Display` (and a tombstone's, read back from the keys, `FromStr`).
pub(crate) fn bound_struct(
    krate: &TokenStream,
    meta: &Meta<'_>,
    event: &mut Generics,
    decode: &mut Generics,
) {
    let clause = event.make_where_clause();
    if !meta.tombstone {
        clause
            .predicates
            .push(syn::parse_quote!(Self: #krate::__private::serde::Serialize));
    }
    display_bounds(clause, meta);
    let decode_clause = decode.make_where_clause();
    decode_clause
        .predicates
        .push(syn::parse_quote!(for<'__outbox_de> Self: #krate::__private::serde::Deserialize<'__outbox_de>));
    from_str_bounds(decode_clause, meta);
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
                from_str_bounds(decode_clause, meta);
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
    for ty in key_types(meta) {
        clause
            .predicates
            .push(syn::parse_quote_spanned!(ty.span()=> #ty: ::core::fmt::Display));
    }
}

/// For a tombstone, `FromStr` (with an error that displays) for the types of its keys,
/// which it is read back from.
fn from_str_bounds(clause: &mut WhereClause, meta: &Meta<'_>) {
    if !meta.tombstone {
        return;
    }
    for ty in key_types(meta) {
        clause
            .predicates
            .push(syn::parse_quote_spanned!(ty.span()=> #ty: ::core::str::FromStr));
        clause.predicates.push(syn::parse_quote_spanned!(ty.span()=>
            <#ty as ::core::str::FromStr>::Err: ::core::fmt::Display
        ));
    }
}

/// The types of the aggregate id's field and of the partition key's.
fn key_types<'m>(meta: &'m Meta<'_>) -> impl Iterator<Item = &'m syn::Type> {
    std::iter::once(meta.aggregate.ty).chain(meta.partition_key.map(|key| key.ty))
}
