//! A typed view of the derive input that keeps references to the original tokens,
//! so every error can point at the token that caused it.

use syn::{DeriveInput, Fields, Generics, Ident, Type};

use crate::attr;
use crate::ctxt::Ctxt;

/// The struct or enum an event is derived for.
pub(crate) struct Input<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) generics: &'a Generics,
    pub(crate) attrs: attr::Container,
    pub(crate) data: Data<'a>,
}

/// The input's shape. A struct with named fields is one event; an enum is one event
/// per variant. Any other shape is reported when the input is read.
pub(crate) enum Data<'a> {
    /// A struct with named fields.
    Struct(Vec<Field<'a>>),
    /// An enum, one event type per variant.
    Enum(Vec<Variant<'a>>),
    /// A tuple or unit struct or a union (already reported).
    Other,
}

/// One variant of an event enum.
pub(crate) struct Variant<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) attrs: attr::Container,
    pub(crate) shape: VariantShape<'a>,
    /// The variant's index among those serde deserializes (serde numbers them without
    /// the `#[serde(skip)]` ones); `None` when serde skips it.
    pub(crate) serde_index: Option<u32>,
    /// The variant's index among those serde serializes (the published ones, in the
    /// order a schema of the enum lists them); `None` when serde skips it.
    pub(crate) serialized_index: Option<u32>,
}

/// What a variant holds.
pub(crate) enum VariantShape<'a> {
    /// Named fields, described by the variant's own attributes.
    Named(Vec<Field<'a>>),
    /// One unnamed field whose type is an event itself.
    Newtype(&'a Type),
    /// A unit variant or a tuple of several fields (already reported).
    Other,
}

/// One named field of the struct or of a variant.
pub(crate) struct Field<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    pub(crate) attrs: attr::Field,
}

impl<'a> Input<'a> {
    /// Reads the input. A struct must have named fields: an event is a record of what
    /// happened, serialized as a JSON object. Mistakes in the shape are recorded and
    /// the attributes are still read, so all errors surface together.
    pub(crate) fn from_syn(cx: &mut Ctxt, input: &'a DeriveInput) -> Self {
        let attrs = attr::Container::parse(cx, &input.attrs);
        let data = match &input.data {
            syn::Data::Struct(data) => match &data.fields {
                Fields::Named(named) => Data::Struct(named_fields(cx, named)),
                Fields::Unnamed(unnamed) => {
                    cx.error_spanned_by(
                        unnamed,
                        "OutboxEvent cannot be derived for a tuple struct: an event needs named fields, which become the keys of its JSON payload",
                    );
                    Data::Other
                }
                Fields::Unit => {
                    cx.error_spanned_by(
                        &input.ident,
                        "OutboxEvent cannot be derived for a unit struct: an event needs named fields, which become the keys of its JSON payload",
                    );
                    Data::Other
                }
            },
            syn::Data::Enum(data) => {
                attr::check_enum_representation(cx, &input.attrs);
                let (mut deserialized, mut serialized) = (0, 0);
                let next = |counter: &mut u32, skipped: bool| {
                    (!skipped).then(|| {
                        *counter += 1;
                        *counter - 1
                    })
                };
                let variants = data
                    .variants
                    .iter()
                    .map(|variant| {
                        let skips = attr::serde_skips(cx, &variant.attrs);
                        Variant {
                            ident: &variant.ident,
                            attrs: attr::Container::parse(cx, &variant.attrs),
                            shape: variant_shape(cx, variant),
                            serde_index: next(&mut deserialized, skips.deserializing),
                            serialized_index: next(&mut serialized, skips.serializing),
                        }
                    })
                    .collect();
                Data::Enum(variants)
            }
            syn::Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "OutboxEvent cannot be derived for a union: derive it on a struct with named fields, or on an enum",
                );
                Data::Other
            }
        };
        Input {
            ident: &input.ident,
            generics: &input.generics,
            attrs,
            data,
        }
    }
}

fn named_fields<'a>(cx: &mut Ctxt, named: &'a syn::FieldsNamed) -> Vec<Field<'a>> {
    named
        .named
        .iter()
        .filter_map(|field| {
            Some(Field {
                ident: field.ident.as_ref()?,
                ty: &field.ty,
                attrs: attr::Field::parse(cx, &field.attrs),
            })
        })
        .collect()
}

fn variant_shape<'a>(cx: &mut Ctxt, variant: &'a syn::Variant) -> VariantShape<'a> {
    match &variant.fields {
        Fields::Named(named) => VariantShape::Named(named_fields(cx, named)),
        Fields::Unnamed(unnamed) if unnamed.unnamed.len() == 1 => {
            let field = &unnamed.unnamed[0];
            if let Some(attr) = field.attrs.iter().find(|a| a.path().is_ident("outbox")) {
                cx.error_spanned_by(
                    attr,
                    "a newtype variant is described by its field's own OutboxEvent impl; `#[outbox(...)]` does not apply to its field",
                );
            }
            VariantShape::Newtype(&field.ty)
        }
        Fields::Unnamed(unnamed) => {
            cx.error_spanned_by(
                unnamed,
                format!(
                    "the variant `{}` holds several unnamed fields: give an event variant named fields (they become the keys of its JSON payload), or one field whose type is an event",
                    variant.ident
                ),
            );
            VariantShape::Other
        }
        Fields::Unit => {
            cx.error_spanned_by(
                &variant.ident,
                format!(
                    "the unit variant `{}` carries no data: an event variant needs named fields (they become the keys of its JSON payload), or one field whose type is an event",
                    variant.ident
                ),
            );
            VariantShape::Other
        }
    }
}
