//! Code generation for `#[derive(OutboxEvent)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Generics, Ident};

use crate::ast::{Field, Input};
use crate::ctxt::Ctxt;
use crate::valid::{self, Event};

/// Reads, checks and expands one derive input. On a mistake, the errors come with a
/// fallback impl (as thiserror does), so that each use of the type as an event does
/// not add a "trait not implemented" error to the one that says what to fix.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let ast = Input::from_syn(&mut cx, input);
    let event = valid::check(&mut cx, &ast);
    let errors = match (cx.check(), event) {
        (Ok(()), Some(event)) => return impl_outbox_event(&event),
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

/// An impl that never runs, for an input with mistakes (see [`derive`]).
fn fallback(input: &Input<'_>) -> TokenStream {
    let krate = match &input.attrs.krate {
        Some(path) => quote!(#path),
        None => quote!(::outbox),
    };
    let never = quote!(::core::unreachable!());
    outbox_event_impl(
        &krate,
        input.ident,
        input.generics,
        Bodies {
            event_type: never.clone(),
            version: never.clone(),
            aggregate: never.clone(),
            partition_key: None,
            payload: never,
        },
    )
}

fn impl_outbox_event(event: &Event<'_>) -> TokenStream {
    let krate = match event.krate {
        Some(path) => quote!(#path),
        None => quote!(::outbox),
    };
    let input = event.input;
    let event_type = event.event_type;
    let version = match event.version {
        Some(version) => quote!(#version),
        None => quote!(#krate::DEFAULT_EVENT_VERSION),
    };

    let mut generics = input.generics.clone();
    let where_clause = generics.make_where_clause();
    where_clause
        .predicates
        .push(syn::parse_quote!(Self: #krate::__private::serde::Serialize));
    let mut displayed = vec![event.aggregate];
    displayed.extend(event.partition_key);
    for field in &displayed {
        let ty = field.ty;
        where_clause
            .predicates
            .push(syn::parse_quote_spanned!(ty.span()=> #ty: ::core::fmt::Display));
    }
    let partition_key = event.partition_key.map(|field| {
        let value = to_string(field);
        quote!(::core::option::Option::Some(#value))
    });
    outbox_event_impl(
        &krate,
        input.ident,
        &generics,
        Bodies {
            event_type: quote!(#event_type),
            version,
            aggregate: to_string(event.aggregate),
            partition_key,
            payload: quote!(#krate::__private::serde_json::to_value(self)),
        },
    )
}

/// The bodies of the impl's methods (`partition_key` keeps the trait's default when
/// `None`).
struct Bodies {
    event_type: TokenStream,
    version: TokenStream,
    aggregate: TokenStream,
    partition_key: Option<TokenStream>,
    payload: TokenStream,
}

fn outbox_event_impl(
    krate: &TokenStream,
    ident: &Ident,
    generics: &Generics,
    bodies: Bodies,
) -> TokenStream {
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let Bodies {
        event_type,
        version,
        aggregate,
        partition_key,
        payload,
    } = bodies;
    let partition_key = partition_key.map(|value| {
        quote! {
            fn partition_key(&self) -> ::core::option::Option<::std::string::String> {
                #value
            }
        }
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::OutboxEvent for #ident #ty_generics #where_clause {
            fn event_type(&self) -> &str {
                #event_type
            }

            fn event_version(&self) -> &str {
                #version
            }

            fn aggregate_id(&self) -> ::std::string::String {
                #aggregate
            }

            #partition_key

            fn payload(
                &self,
            ) -> ::core::result::Result<
                #krate::__private::serde_json::Value,
                #krate::__private::serde_json::Error,
            > {
                #payload
            }
        }
    }
}

fn to_string(field: &Field<'_>) -> TokenStream {
    let ident = field.ident;
    quote_spanned!(field.ty.span()=> ::std::string::ToString::to_string(&self.#ident))
}
