//! The derive's driver: runs the stages on one input and puts the two impls together,
//! or, on a mistake, returns the errors with impls that never run.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::ast::Input;
use crate::bound::{bound_enum, bound_struct};
use crate::ctxt::Ctxt;
use crate::enum_body::enum_bodies;
use crate::impls::{Decode, Methods, decode_event_impl, outbox_event_impl};
use crate::struct_body::struct_bodies;
use crate::valid::{self, Event, Kind};

/// Reads, checks and expands one derive input. On a mistake, the errors come with
/// fallback impls (as thiserror does), so that each use of the type as an event does
/// not add a "trait not implemented" error to the one that says what to fix.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let ast = Input::from_syn(&mut cx, input);
    let event = valid::check(&mut cx, &ast);
    let errors = match (cx.check(), event) {
        (Ok(()), Some(event)) => return expand(&event),
        (Err(errors), _) => errors,
        (Ok(()), None) => syn::Error::new_spanned(
            &input.ident,
            "OutboxEvent: the input was rejected without an error message; please report this as a bug",
        ),
    };
    let errors = errors.into_compile_error();
    let fallback = fallback(&ast);
    quote! {
        #errors
        #fallback
    }
}

fn crate_path(path: Option<&syn::Path>) -> TokenStream {
    match path {
        Some(path) => quote!(#path),
        None => quote!(::outbox),
    }
}

/// Impls that never run, for an input with mistakes (see [`derive`]).
fn fallback(input: &Input<'_>) -> TokenStream {
    let krate = crate_path(input.attrs.krate.as_ref());
    let never = quote!(::core::unreachable!());
    let event = Methods {
        event_type: never.clone(),
        version: never.clone(),
        aggregate: never.clone(),
        partition_key: None,
        user_and_trace: None,
        payload: never.clone(),
        tombstone: None,
        declared: never.clone(),
    };
    let decode = Decode {
        accepts: never.clone(),
        knows_type: never.clone(),
        decode: never,
        decode_tombstone: None,
    };
    let generics = input.generics;
    let ident = input.ident;
    let mut out = outbox_event_impl(&krate, ident, generics, event);
    out.extend(decode_event_impl(&krate, ident, generics, decode));
    out
}

fn expand(event: &Event<'_>) -> TokenStream {
    let krate = crate_path(event.krate);
    let input = event.input;
    let mut event_generics = input.generics.clone();
    let mut decode_generics = input.generics.clone();
    let (methods, decode) = match &event.kind {
        Kind::Struct(meta) => {
            bound_struct(&krate, meta, &mut event_generics, &mut decode_generics);
            struct_bodies(&krate, meta)
        }
        Kind::Enum(variants) => {
            bound_enum(&krate, variants, &mut event_generics, &mut decode_generics);
            enum_bodies(&krate, variants)
        }
    };
    let mut out = outbox_event_impl(&krate, input.ident, &event_generics, methods);
    out.extend(decode_event_impl(
        &krate,
        input.ident,
        &decode_generics,
        decode,
    ));
    out
}
