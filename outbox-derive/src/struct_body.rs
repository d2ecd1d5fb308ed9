//! The method bodies of a struct's impls: constants from its attributes, keys read from
//! its fields, and the whole struct as the payload.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::Field;
use crate::impls::{Decode, Methods, declared_event, null_payload, tombstone_fields, version_of};
use crate::valid::Meta;

/// The bodies of both impls for a struct described by `meta`.
pub(crate) fn struct_bodies(krate: &TokenStream, meta: &Meta<'_>) -> (Methods, Decode) {
    let event_type = meta.event_type;
    let version = version_of(krate, meta);
    let field = |field: &Field<'_>| {
        let ident = field.ident;
        quote_spanned!(field.ty.span()=> ::std::string::ToString::to_string(&self.#ident))
    };
    let methods = Methods {
        event_type: quote!(#event_type),
        version: version.clone(),
        aggregate: field(meta.aggregate),
        partition_key: meta.partition_key.map(|key| {
            let value = field(key);
            quote!(::core::option::Option::Some(#value))
        }),
        user_and_trace: None,
        payload: if meta.tombstone {
            null_payload(krate)
        } else {
            quote!(#krate::__private::serde_json::to_value(self))
        },
        tombstone: meta.tombstone.then(|| quote!(true)),
        declared: {
            let declared = declared_event(krate, meta);
            quote!(::std::vec![#declared])
        },
    };
    let decode_tombstone = meta.tombstone.then(|| {
        let fields = tombstone_fields(krate, meta);
        quote! {
            if !<Self as #krate::DecodeEvent>::accepts(event_type, event_version) {
                return ::core::result::Result::Err(
                    #krate::__private::unknown_event::<Self>(event_type, event_version),
                );
            }
            ::core::result::Result::Ok(Self { #fields })
        }
    });
    let decode = Decode {
        accepts: quote!(event_type == #event_type && event_version == #version),
        knows_type: quote!(event_type == #event_type),
        decode: quote! {
            #krate::__private::decode_struct(
                <Self as #krate::DecodeEvent>::accepts(event_type, event_version),
                event_type,
                event_version,
                payload,
            )
        },
        decode_tombstone,
    };
    (methods, decode)
}
