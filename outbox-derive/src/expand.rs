//! Code generation for `#[derive(OutboxEvent)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::DeriveInput;
use syn::spanned::Spanned;

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
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::OutboxEvent for #ident #ty_generics #where_clause {
            fn event_type(&self) -> &str {
                ::core::unreachable!()
            }

            fn event_version(&self) -> &str {
                ::core::unreachable!()
            }

            fn aggregate_id(&self) -> ::std::string::String {
                ::core::unreachable!()
            }

            fn payload(
                &self,
            ) -> ::core::result::Result<
                #krate::__private::serde_json::Value,
                #krate::__private::serde_json::Error,
            > {
                ::core::unreachable!()
            }
        }
    }
}

fn impl_outbox_event(event: &Event<'_>) -> TokenStream {
    let krate = match event.krate {
        Some(path) => quote!(#path),
        None => quote!(::outbox),
    };
    let input = event.input;
    let ident = input.ident;
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
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    let aggregate = to_string(event.aggregate);
    let partition_key = event.partition_key.map(|field| {
        let value = to_string(field);
        quote! {
            fn partition_key(&self) -> ::core::option::Option<::std::string::String> {
                ::core::option::Option::Some(#value)
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
                #krate::__private::serde_json::to_value(self)
            }
        }
    }
}

fn to_string(field: &Field<'_>) -> TokenStream {
    let ident = field.ident;
    quote_spanned!(field.ty.span()=> ::std::string::ToString::to_string(&self.#ident))
}
