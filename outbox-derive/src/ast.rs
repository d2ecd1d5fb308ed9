//! A typed view of the derive input that keeps references to the original tokens,
//! so every error can point at the token that caused it.

use syn::{Data, DeriveInput, Fields, Generics, Ident, Type};

use crate::attr;
use crate::ctxt::Ctxt;

/// The struct an event is derived for.
pub(crate) struct Input<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) generics: &'a Generics,
    pub(crate) attrs: attr::Container,
    pub(crate) fields: Vec<Field<'a>>,
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
        let fields = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => named
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
                Fields::Unnamed(unnamed) => {
                    cx.error_spanned_by(
                        unnamed,
                        "OutboxEvent cannot be derived for a tuple struct: an event needs named fields, which become the keys of its JSON payload",
                    );
                    Vec::new()
                }
                Fields::Unit => {
                    cx.error_spanned_by(
                        &input.ident,
                        "OutboxEvent cannot be derived for a unit struct: an event needs named fields, which become the keys of its JSON payload",
                    );
                    Vec::new()
                }
            },
            Data::Enum(data) => {
                cx.error_spanned_by(
                    data.enum_token,
                    "OutboxEvent cannot be derived for an enum: derive it on one struct per event type, or use `outbox::EventBuilder` for events whose type is chosen at run time",
                );
                Vec::new()
            }
            Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "OutboxEvent cannot be derived for a union: derive it on a struct with named fields",
                );
                Vec::new()
            }
        };
        Input {
            ident: &input.ident,
            generics: &input.generics,
            attrs,
            fields,
        }
    }

    /// Whether the input is a struct with named fields (the only shape that gets an impl).
    pub(crate) fn is_named_struct(input: &DeriveInput) -> bool {
        matches!(&input.data, Data::Struct(data) if matches!(data.fields, Fields::Named(_)))
    }
}
