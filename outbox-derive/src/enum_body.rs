//! The method bodies of an enum's impls: each matches on the variant, answering from a
//! named variant's attributes or forwarding to a newtype variant's own impl.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::Field;
use crate::impls::{Decode, Methods, declared_event, null_payload, tombstone_fields, version_of};
use crate::valid::{Meta, VariantEvent, VariantKind};

/// The bodies of both impls for an enum of `variants`.
pub(crate) fn enum_bodies(krate: &TokenStream, variants: &[VariantEvent<'_>]) -> (Methods, Decode) {
    (methods(krate, variants), decode(krate, variants))
}

/// The body of one named variant's match arm, and the field it binds by name.
struct Arm {
    binds: Option<syn::Ident>,
    body: TokenStream,
}

impl Arm {
    /// An arm that binds nothing.
    fn constant(body: TokenStream) -> Self {
        Arm { binds: None, body }
    }
}

/// `match self { .. }` with an arm per variant: `named` gives a named variant's arm;
/// a newtype variant's arm binds its value as `__event` for `newtype`.
fn match_variants(
    variants: &[VariantEvent<'_>],
    named: &dyn Fn(&Meta<'_>) -> Arm,
    newtype: &TokenStream,
) -> TokenStream {
    let arms = variants.iter().map(|event| {
        let ident = event.variant.ident;
        match &event.kind {
            VariantKind::Named(meta) => {
                let Arm { binds, body } = named(meta);
                let binds = binds.map(|field| quote!(#field,));
                quote!(Self::#ident { #binds .. } => #body,)
            }
            VariantKind::Newtype(_) => quote!(Self::#ident(__event) => #newtype,),
        }
    });
    quote!(match self { #(#arms)* })
}

/// A field bound by name in a match arm, as a string.
fn to_string(field: &Field<'_>) -> TokenStream {
    let ident = field.ident;
    quote_spanned!(field.ty.span()=> ::std::string::ToString::to_string(#ident))
}

/// The bodies of `OutboxEvent`'s methods.
fn methods(krate: &TokenStream, variants: &[VariantEvent<'_>]) -> Methods {
    let event_type = match_variants(
        variants,
        &|meta| {
            let lit = meta.event_type;
            Arm::constant(quote!(#lit))
        },
        &quote!(#krate::OutboxEvent::event_type(__event)),
    );
    let version = match_variants(
        variants,
        &|meta| Arm::constant(version_of(krate, meta)),
        &quote!(#krate::OutboxEvent::event_version(__event)),
    );
    let aggregate = match_variants(
        variants,
        &|meta| Arm {
            binds: Some(meta.aggregate.ident.clone()),
            body: to_string(meta.aggregate),
        },
        &quote!(#krate::OutboxEvent::aggregate_id(__event)),
    );
    let payload = match_variants(
        variants,
        &|meta| {
            Arm::constant(if meta.tombstone {
                null_payload(krate)
            } else {
                quote!(#krate::__private::variant_payload(
                    #krate::__private::serde_json::to_value(self)
                ))
            })
        },
        &quote!(#krate::OutboxEvent::payload(__event)),
    );
    Methods {
        event_type,
        version,
        aggregate,
        partition_key: partition_key(krate, variants),
        user_and_trace: user_and_trace(krate, variants),
        payload,
        tombstone: may_be_tombstone(variants).then(|| {
            match_variants(
                variants,
                &|meta| {
                    let tombstone = meta.tombstone;
                    Arm::constant(quote!(#tombstone))
                },
                &quote!(#krate::OutboxEvent::is_tombstone(__event)),
            )
        }),
        declared: declared(krate, variants),
    }
}

/// `declared`: each named variant's event, and each newtype variant's type's, placed
/// in the variant by its index among those serde serializes (a schema describes what
/// is published).
fn declared(krate: &TokenStream, variants: &[VariantEvent<'_>]) -> TokenStream {
    let each = variants.iter().map(|event| {
        let index = match event.variant.serialized_index {
            Some(index) => quote!(::core::option::Option::Some(#index)),
            None => quote!(::core::option::Option::None),
        };
        match &event.kind {
            VariantKind::Named(meta) => {
                let declared = declared_event(krate, meta);
                quote!(__declared.push(#declared.in_variant(#index));)
            }
            VariantKind::Newtype(ty) => quote! {
                __declared.extend(
                    <#ty as #krate::OutboxEvent>::declared()
                        .into_iter()
                        .map(|__event| __event.in_variant(#index)),
                );
            },
        }
    });
    quote! {
        let mut __declared = ::std::vec::Vec::new();
        #(#each)*
        __declared
    }
}

/// Whether a variant may be a tombstone: one declared so, or any newtype variant
/// (its own impl says). Otherwise the traits' defaults apply.
fn may_be_tombstone(variants: &[VariantEvent<'_>]) -> bool {
    variants.iter().any(|event| match &event.kind {
        VariantKind::Named(meta) => meta.tombstone,
        VariantKind::Newtype(_) => true,
    })
}

/// `partition_key`, unless no variant can have one (the trait's default then applies).
fn partition_key(krate: &TokenStream, variants: &[VariantEvent<'_>]) -> Option<TokenStream> {
    let has_key = variants.iter().any(|event| match &event.kind {
        VariantKind::Named(meta) => meta.partition_key.is_some(),
        VariantKind::Newtype(_) => true,
    });
    has_key.then(|| {
        match_variants(
            variants,
            &|meta| match meta.partition_key {
                Some(key) => {
                    let value = to_string(key);
                    Arm {
                        binds: Some(key.ident.clone()),
                        body: quote!(::core::option::Option::Some(#value)),
                    }
                }
                None => Arm::constant(quote!(::core::option::Option::None)),
            },
            &quote!(#krate::OutboxEvent::partition_key(__event)),
        )
    })
}

/// `user_id` and `trace_id`, forwarded to newtype variants; without any, the trait's
/// defaults apply.
fn user_and_trace(
    krate: &TokenStream,
    variants: &[VariantEvent<'_>],
) -> Option<(TokenStream, TokenStream)> {
    let newtypes = variants
        .iter()
        .any(|event| matches!(event.kind, VariantKind::Newtype(_)));
    newtypes.then(|| {
        let none = |_: &Meta<'_>| Arm::constant(quote!(::core::option::Option::None));
        (
            match_variants(
                variants,
                &none,
                &quote!(#krate::OutboxEvent::user_id(__event)),
            ),
            match_variants(
                variants,
                &none,
                &quote!(#krate::OutboxEvent::trace_id(__event)),
            ),
        )
    })
}

/// One variant's part of the decoding.
struct DecodeArm {
    /// Whether the variant is the event type and version received.
    accepts: TokenStream,
    /// Whether the variant is the event type received, in any version.
    knows_type: TokenStream,
    /// The decoding of the payload into the variant.
    decode: TokenStream,
    /// The decoding of a tombstone into the variant.
    decode_tombstone: TokenStream,
}

/// The bodies of `DecodeEvent`'s methods: the first variant that accepts the event
/// decodes it.
fn decode(krate: &TokenStream, variants: &[VariantEvent<'_>]) -> Decode {
    let arms: Vec<DecodeArm> = variants
        .iter()
        .filter_map(|event| decode_arm(krate, event))
        .collect();
    let accepts: Vec<_> = arms.iter().map(|arm| &arm.accepts).collect();
    let knows: Vec<_> = arms.iter().map(|arm| &arm.knows_type).collect();
    let decodes: Vec<_> = arms.iter().map(|arm| &arm.decode).collect();
    let tombstones: Vec<_> = arms.iter().map(|arm| &arm.decode_tombstone).collect();
    let unknown = quote! {
        ::core::result::Result::Err(
            #krate::__private::unknown_event::<Self>(event_type, event_version),
        )
    };
    let decode_tombstone = may_be_tombstone(variants).then(|| {
        quote! {
            #(
                if #accepts {
                    return #tombstones;
                }
            )*
            #unknown
        }
    });
    Decode {
        accepts: quote!(false #(|| #accepts)*),
        knows_type: quote!(false #(|| #knows)*),
        decode: quote! {
            #(
                if #accepts {
                    return #decodes;
                }
            )*
            #unknown
        },
        decode_tombstone,
    }
}

/// `None` for a variant serde skips when deserializing: it cannot be decoded into.
fn decode_arm(krate: &TokenStream, event: &VariantEvent<'_>) -> Option<DecodeArm> {
    let index = event.variant.serde_index?;
    let ident = event.variant.ident;
    Some(match &event.kind {
        VariantKind::Named(meta) => {
            let event_type = meta.event_type;
            let version = version_of(krate, meta);
            let decode_tombstone = if meta.tombstone {
                let fields = tombstone_fields(krate, meta);
                quote!(::core::result::Result::Ok(Self::#ident { #fields }))
            } else {
                quote! {
                    ::core::result::Result::Err(
                        #krate::__private::unexpected_tombstone::<Self>(event_type, event_version),
                    )
                }
            };
            DecodeArm {
                accepts: quote!((event_type == #event_type && event_version == #version)),
                knows_type: quote!((event_type == #event_type)),
                decode: quote! {
                    #krate::__private::decode_variant(#index, event_type, event_version, payload)
                },
                decode_tombstone,
            }
        }
        VariantKind::Newtype(ty) => DecodeArm {
            accepts: quote!(<#ty as #krate::DecodeEvent>::accepts(event_type, event_version)),
            knows_type: quote!(<#ty as #krate::DecodeEvent>::knows_type(event_type)),
            decode: quote! {
                <#ty as #krate::DecodeEvent>::decode(event_type, event_version, payload)
                    .map(Self::#ident)
            },
            decode_tombstone: quote! {
                <#ty as #krate::DecodeEvent>::decode_tombstone(
                    event_type, event_version, aggregate_id, key,
                )
                .map(Self::#ident)
            },
        },
    })
}
