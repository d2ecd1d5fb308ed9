//! `#[derive(OutboxEvent)]`: the procedural macro behind `outbox::OutboxEvent`.
//!
//! Use it through the `outbox` crate, which re-exports it; the attribute reference
//! lives on `outbox::OutboxEvent`. The work is split in stages, one per module: `ast`
//! builds a typed view of the input and parses the attributes (`attr`), `valid` checks
//! them against each other and against the fields, and `expand` drives the stages and
//! writes the impls: `bound` gives their where clauses, `struct_body` and `enum_body`
//! their method bodies, and `impls` the two impls around those bodies.
//! Every mistake becomes a `syn::Error` at the offending token, collected by `ctxt`;
//! all mistakes in one input are reported together, with impls that never run, so that
//! uses of the type add no errors of their own.

mod ast;
mod attr;
mod bound;
mod ctxt;
mod enum_body;
mod expand;
mod impls;
mod struct_body;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `outbox::OutboxEvent` (and `outbox::DecodeEvent` when the type is also
/// `Deserialize`) for a struct with named fields, a newtype, or an enum of such variants.
///
/// See the documentation of `outbox::OutboxEvent` for the attributes.
#[proc_macro_derive(OutboxEvent, attributes(outbox))]
pub fn derive_outbox_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
