//! The two trait impls a derive writes, `OutboxEvent` and `DecodeEvent`, around method
//! bodies that the struct and enum stages (or the fallback) provide.

use proc_macro2::TokenStream;
use quote::quote;
use syn::Generics;

use crate::valid::Meta;

/// The bodies of `OutboxEvent`'s methods. The optional ones keep the trait's default
/// when `None`.
pub(crate) struct Methods {
    pub(crate) event_type: TokenStream,
    pub(crate) version: TokenStream,
    pub(crate) aggregate: TokenStream,
    pub(crate) partition_key: Option<TokenStream>,
    pub(crate) user_and_trace: Option<(TokenStream, TokenStream)>,
    pub(crate) payload: TokenStream,
    pub(crate) tombstone: Option<TokenStream>,
    /// A `Vec<DeclaredEvent>` expression.
    pub(crate) declared: TokenStream,
}

/// The bodies of `DecodeEvent`'s methods, over `event_type`, `event_version` and
/// `payload` (`decode_tombstone`: `aggregate_id` and `key` instead). The optional one
/// keeps the trait's default when `None`.
pub(crate) struct Decode {
    pub(crate) accepts: TokenStream,
    /// Over `event_type` alone.
    pub(crate) knows_type: TokenStream,
    pub(crate) decode: TokenStream,
    pub(crate) decode_tombstone: Option<TokenStream>,
}

/// An event type's version: the one it names, or the `outbox` crate's default.
pub(crate) fn version_of(krate: &TokenStream, meta: &Meta<'_>) -> TokenStream {
    match meta.version {
        Some(version) => quote!(#version),
        None => quote!(#krate::DEFAULT_EVENT_VERSION),
    }
}

/// The fields of a tombstone read back from its keys, as `field: value,` for a struct
/// or variant expression: the aggregate field from `aggregate_id`, the partition
/// key's from `key` (each with its `FromStr`).
pub(crate) fn tombstone_fields(krate: &TokenStream, meta: &Meta<'_>) -> TokenStream {
    let read = |field: &crate::ast::Field<'_>, source: TokenStream| {
        let ident = field.ident;
        let name = ident.to_string();
        quote! {
            #ident: #krate::__private::tombstone_field(event_type, event_version, #name, #source)?,
        }
    };
    let mut fields = read(meta.aggregate, quote!(aggregate_id));
    if let Some(key) = meta
        .partition_key
        .filter(|key| key.ident != meta.aggregate.ident)
    {
        fields.extend(read(key, quote!(key)));
    }
    fields
}

/// The `DeclaredEvent` of the struct or named variant `meta` describes (its payload
/// the whole type; a variant's caller places it).
pub(crate) fn declared_event(krate: &TokenStream, meta: &Meta<'_>) -> TokenStream {
    let event_type = meta.event_type;
    let version = version_of(krate, meta);
    let tombstone = meta.tombstone.then(|| quote!(.tombstone()));
    quote!(#krate::DeclaredEvent::new(#event_type, #version) #tombstone)
}

/// `Value::Null`: a tombstone's payload.
pub(crate) fn null_payload(krate: &TokenStream) -> TokenStream {
    quote!(::core::result::Result::Ok(#krate::__private::serde_json::Value::Null))
}

pub(crate) fn outbox_event_impl(
    krate: &TokenStream,
    ident: &syn::Ident,
    generics: &Generics,
    methods: Methods,
) -> TokenStream {
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let Methods {
        event_type,
        version,
        aggregate,
        partition_key,
        user_and_trace,
        payload,
        tombstone,
        declared,
    } = methods;
    let tombstone = tombstone.map(|value| {
        quote! {
            fn is_tombstone(&self) -> bool {
                #value
            }
        }
    });
    let partition_key = partition_key.map(|value| {
        quote! {
            fn partition_key(&self) -> ::core::option::Option<::std::string::String> {
                #value
            }
        }
    });
    let user_and_trace = user_and_trace.map(|(user_id, trace_id)| {
        quote! {
            fn user_id(&self) -> ::core::option::Option<::std::string::String> {
                #user_id
            }

            fn trace_id(&self) -> ::core::option::Option<::std::string::String> {
                #trace_id
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

            #user_and_trace

            fn payload(
                &self,
            ) -> ::core::result::Result<
                #krate::__private::serde_json::Value,
                #krate::__private::serde_json::Error,
            > {
                #payload
            }

            #tombstone

            fn declared() -> ::std::vec::Vec<#krate::DeclaredEvent> {
                #declared
            }
        }
    }
}

pub(crate) fn decode_event_impl(
    krate: &TokenStream,
    ident: &syn::Ident,
    generics: &Generics,
    decode: Decode,
) -> TokenStream {
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let Decode {
        accepts,
        knows_type,
        decode,
        decode_tombstone,
    } = decode;
    let decode_tombstone = decode_tombstone.map(|body| {
        quote! {
            fn decode_tombstone(
                event_type: &str,
                event_version: &str,
                aggregate_id: &str,
                key: &str,
            ) -> ::core::result::Result<Self, #krate::Error> {
                #body
            }
        }
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::DecodeEvent for #ident #ty_generics #where_clause {
            fn accepts(event_type: &str, event_version: &str) -> bool {
                #accepts
            }

            fn knows_type(event_type: &str) -> bool {
                #knows_type
            }

            fn decode(
                event_type: &str,
                event_version: &str,
                payload: &[u8],
            ) -> ::core::result::Result<Self, #krate::Error> {
                #decode
            }

            #decode_tombstone
        }
    }
}
