//! `#[derive(OutboxEvent)]`: the procedural macro behind `outbox::OutboxEvent`.
//!
//! Use it through the `outbox` crate, which re-exports it; the attribute reference
//! lives on `outbox::OutboxEvent`. The work is split in stages: `ast` builds a typed
//! view of the input and parses the attributes (`attr`), `valid` checks them
//! against each other and against the struct's fields, and `expand` writes the impl.
//! Every mistake becomes a `syn::Error` at the offending token; all mistakes in one
//! input are reported together, with an impl that never runs, so that uses of the type
//! add no errors of their own.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `outbox::OutboxEvent` for a struct with named fields.
///
/// See the documentation of `outbox::OutboxEvent` for the attributes.
#[proc_macro_derive(OutboxEvent, attributes(outbox))]
pub fn derive_outbox_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
