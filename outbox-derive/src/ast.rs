//! A typed view of the derive input that keeps references to the original tokens,
//! so every error can point at the token that caused it.

use syn::{DeriveInput, Fields, Generics, Ident, Type};

use crate::attr;
use crate::ctxt::Ctxt;

/// The struct an event is derived for.
pub(crate) struct Input<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) generics: &'a Generics,
    pub(crate) attrs: attr::Container,
    pub(crate) data: Data<'a>,
}

/// The input's shape. Only a struct with named fields is an event; any other shape is
/// reported when the input is read.
pub(crate) enum Data<'a> {
    /// A struct with named fields.
    Struct(Vec<Field<'a>>),
    /// A tuple or unit struct, an enum or a union (already reported).
    Other,
}

/// One named field of the struct.
pub(crate) struct Field<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    pub(crate) attrs: attr::Field,
}

impl<'a> Input<'a> {
    /// Reads the input. Only structs with named fields are events: an event is a
    /// record of what happened, serialized as a JSON object. Mistakes in the shape are
    /// recorded and the attributes are still read, so all errors surface together.
    pub(crate) fn from_syn(cx: &mut Ctxt, input: &'a DeriveInput) -> Self {
        let attrs = attr::Container::parse(cx, &input.attrs);
        let data = match &input.data {
            syn::Data::Struct(data) => match &data.fields {
                Fields::Named(named) => Data::Struct(
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
                        .collect(),
                ),
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
                cx.error_spanned_by(
                    data.enum_token,
                    "OutboxEvent cannot be derived for an enum: derive it on one struct per event type, or use `outbox::EventBuilder` for events whose type is chosen at run time",
                );
                Data::Other
            }
            syn::Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "OutboxEvent cannot be derived for a union: derive it on a struct with named fields",
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

    /// The struct's named fields (none for any other shape).
    pub(crate) fn fields(&self) -> &[Field<'a>] {
        match &self.data {
            Data::Struct(fields) => fields,
            Data::Other => &[],
        }
    }
}
