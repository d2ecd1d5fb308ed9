//! Code generation for `#[derive(OutboxEvent)]`: an `OutboxEvent` impl to store the
//! event, and a `DecodeEvent` impl to read it back from a received message.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Generics, WhereClause};

use crate::ast::{Field, Input};
use crate::ctxt::Ctxt;
use crate::valid::{self, Event, Kind, Meta, VariantEvent, VariantKind};

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
    };
    let decode = Decode {
        accepts: never.clone(),
        knows_type: never.clone(),
        decode: never,
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

/// The bounds the impls need. Decoding needs `Deserialize`, which an event that is
/// only ever stored may lack: its bound is written `for<'__outbox_de>`, which the compiler
/// checks where the impl is used rather than where it is written, so such an event
/// simply does not implement `DecodeEvent`.
fn bound_struct(krate: &TokenStream, meta: &Meta<'_>, event: &mut Generics, decode: &mut Generics) {
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

fn bound_enum(
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

fn version_of(krate: &TokenStream, meta: &Meta<'_>) -> TokenStream {
    match meta.version {
        Some(version) => quote!(#version),
        None => quote!(#krate::DEFAULT_EVENT_VERSION),
    }
}

fn struct_bodies(krate: &TokenStream, meta: &Meta<'_>) -> (Methods, Decode) {
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
        payload: quote!(#krate::__private::serde_json::to_value(self)),
    };
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
    };
    (methods, decode)
}

fn enum_bodies(krate: &TokenStream, variants: &[VariantEvent<'_>]) -> (Methods, Decode) {
    let matching = |named: &dyn Fn(&Meta<'_>) -> Arm, newtype: TokenStream| {
        match_variants(variants, named, &newtype)
    };
    let constant = |body: TokenStream| Arm { binds: None, body };
    let to_string = |field: &Field<'_>| {
        let ident = field.ident;
        quote_spanned!(field.ty.span()=> ::std::string::ToString::to_string(#ident))
    };

    let event_type = matching(
        &|meta| {
            let lit = meta.event_type;
            constant(quote!(#lit))
        },
        quote!(#krate::OutboxEvent::event_type(__event)),
    );
    let version = matching(
        &|meta| constant(version_of(krate, meta)),
        quote!(#krate::OutboxEvent::event_version(__event)),
    );
    let aggregate = matching(
        &|meta| Arm {
            binds: Some(meta.aggregate.ident.clone()),
            body: to_string(meta.aggregate),
        },
        quote!(#krate::OutboxEvent::aggregate_id(__event)),
    );
    let none = quote!(::core::option::Option::None);
    let has_key = variants.iter().any(|event| match &event.kind {
        VariantKind::Named(meta) => meta.partition_key.is_some(),
        VariantKind::Newtype(_) => true,
    });
    let partition_key = has_key.then(|| {
        matching(
            &|meta| match meta.partition_key {
                Some(key) => {
                    let value = to_string(key);
                    Arm {
                        binds: Some(key.ident.clone()),
                        body: quote!(::core::option::Option::Some(#value)),
                    }
                }
                None => constant(none.clone()),
            },
            quote!(#krate::OutboxEvent::partition_key(__event)),
        )
    });
    let newtypes = variants
        .iter()
        .any(|event| matches!(event.kind, VariantKind::Newtype(_)));
    let user_and_trace = newtypes.then(|| {
        let none = |_: &Meta<'_>| constant(none.clone());
        (
            matching(&none, quote!(#krate::OutboxEvent::user_id(__event))),
            matching(&none, quote!(#krate::OutboxEvent::trace_id(__event))),
        )
    });
    let payload = matching(
        &|_| {
            constant(quote!(#krate::__private::variant_payload(
                #krate::__private::serde_json::to_value(self)
            )))
        },
        quote!(#krate::OutboxEvent::payload(__event)),
    );
    let methods = Methods {
        event_type,
        version,
        aggregate,
        partition_key,
        user_and_trace,
        payload,
    };

    // Variants serde skips when deserializing cannot be decoded into.
    let ((accepts, knows), decodes): ((Vec<_>, Vec<_>), Vec<_>) = variants
        .iter()
        .filter_map(|event| {
            let ident = event.variant.ident;
            match &event.kind {
                VariantKind::Named(meta) => {
                    let index = event.variant.serde_index?;
                    let event_type = meta.event_type;
                    let version = version_of(krate, meta);
                    Some((
                        (
                            quote!((event_type == #event_type && event_version == #version)),
                            quote!((event_type == #event_type)),
                        ),
                        quote! {
                            #krate::__private::decode_variant(#index, event_type, event_version, payload)
                        },
                    ))
                }
                VariantKind::Newtype(ty) => event.variant.serde_index.map(|_| {
                    (
                        (
                            quote!(<#ty as #krate::DecodeEvent>::accepts(event_type, event_version)),
                            quote!(<#ty as #krate::DecodeEvent>::knows_type(event_type)),
                        ),
                        quote! {
                            <#ty as #krate::DecodeEvent>::decode(event_type, event_version, payload)
                                .map(Self::#ident)
                        },
                    )
                }),
            }
        })
        .unzip();
    let decode = Decode {
        accepts: quote!(false #(|| #accepts)*),
        knows_type: quote!(false #(|| #knows)*),
        decode: quote! {
            #(
                if #accepts {
                    return #decodes;
                }
            )*
            ::core::result::Result::Err(
                #krate::__private::unknown_event::<Self>(event_type, event_version),
            )
        },
    };
    (methods, decode)
}

/// The body of one named variant's match arm, and the field it binds by name.
struct Arm {
    binds: Option<syn::Ident>,
    body: TokenStream,
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

/// The bodies of `OutboxEvent`'s methods. The optional ones keep the trait's default
/// when `None`.
struct Methods {
    event_type: TokenStream,
    version: TokenStream,
    aggregate: TokenStream,
    partition_key: Option<TokenStream>,
    user_and_trace: Option<(TokenStream, TokenStream)>,
    payload: TokenStream,
}

/// The bodies of `DecodeEvent`'s methods, over `event_type`, `event_version` and
/// `payload`.
struct Decode {
    accepts: TokenStream,
    /// Over `event_type` alone.
    knows_type: TokenStream,
    decode: TokenStream,
}

fn outbox_event_impl(
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
    } = methods;
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
        }
    }
}

fn decode_event_impl(
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
    } = decode;
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
        }
    }
}
