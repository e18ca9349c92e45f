//! `#[micro::service]`: a trait of `async fn`s turned into a typed service.
//!
//! ```ignore
//! #[micro::service]
//! trait Inventory {
//!     #[idempotent]
//!     async fn reserve(&self, ctx: CallContext, req: ReserveRequest)
//!         -> Result<ReserveReply, ServiceError>;
//! }
//! ```
//!
//! generates
//! - the trait `Inventory` itself, to implement on your own type (each method returns a `Send`
//!   future; implement it with `async fn`), with the error type as declared (any
//!   `E: Into<ServiceError>`);
//! - `InventoryServer<S>`, built with `InventoryServer::new(state)` (or `from_arc`), which holds
//!   the state in one `Arc` shared by every endpoint, and registers with
//!   `Service::new(..).handle(server)` as endpoints `Inventory.Reserve`, ...;
//! - `InventoryClient`, built with `InventoryClient::new(&client)`, with one method per endpoint
//!   (`reserve(&req)`) and its `_with(.., CallOptions)` twin.
//!
//! The shape follows the arguments, as [`Endpoint`]'s constructors do: `(ctx, Req) -> Resp` is
//! unary, `(ctx, Req, Outgoing<Resp>) -> ()` a server stream, `(ctx, Incoming<Req>) -> Resp` a
//! client stream, `(ctx, Incoming<Req>, Outgoing<Resp>) -> ()` a bidirectional stream.
//!
//! Attribute arguments: `name = "inventory"` (the service name the client calls; by default the
//! trait's name in snake_case) and `crate = "::micro_service"` (the path the generated code uses;
//! `::micro::service` by default, for users of the `micro` facade).
//!
//! [`Endpoint`]: https://docs.rs/micro-service/latest/micro_service/struct.Endpoint.html

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{
    Error, FnArg, GenericArgument, ItemTrait, LitStr, Path, PathArguments, ReturnType, TraitItem,
    TraitItemFn, Type,
};

/// Turns a trait of `async fn`s into a typed service: the handler trait, `<Trait>Server` to
/// register it on a `Service` and `<Trait>Client` to call it (see the crate documentation).
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    match expand(args.into(), input.into()) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

/// The attribute's arguments.
struct Args {
    name: Option<String>,
    krate: Path,
}

fn parse_args(args: TokenStream2) -> syn::Result<Args> {
    let mut parsed = Args {
        name: None,
        krate: syn::parse_quote!(::micro::service),
    };
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let value: LitStr = meta.value()?.parse()?;
            parsed.name = Some(value.value());
            Ok(())
        } else if meta.path.is_ident("crate") {
            let value: LitStr = meta.value()?.parse()?;
            parsed.krate = value.parse()?;
            Ok(())
        } else {
            Err(meta.error("expected `name = \"...\"` or `crate = \"...\"`"))
        }
    });
    parser.parse2(args)?;
    Ok(parsed)
}

/// The four shapes, as the arguments say.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unary,
    ServerStream,
    ClientStream,
    Bidi,
}

/// One method of the trait, understood.
struct Method {
    item: TraitItemFn,
    shape: Shape,
    idempotent: bool,
    request: Type,
    response: Type,
    error: Type,
}

fn expand(args: TokenStream2, input: TokenStream2) -> syn::Result<TokenStream2> {
    let args = parse_args(args)?;
    let mut item: ItemTrait = syn::parse2(input)?;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(Error::new(
            item.generics.span(),
            "a service trait cannot be generic",
        ));
    }
    let mut methods = Vec::new();
    let mut errors: Option<Error> = None;
    for entry in &mut item.items {
        let TraitItem::Fn(method) = entry else {
            let err = Error::new(entry.span(), "a service trait holds only `async fn`s");
            combine(&mut errors, err);
            continue;
        };
        match method_of(method) {
            Ok(method) => methods.push(method),
            Err(err) => combine(&mut errors, err),
        }
    }
    if let Some(errors) = errors {
        // The trait as written (without the attribute's marks) next to the errors, so the
        // errors are the only ones: no unknown attribute, no unused import.
        for entry in &mut item.items {
            if let TraitItem::Fn(method) = entry {
                method
                    .attrs
                    .retain(|attr| !attr.path().is_ident("idempotent"));
            }
        }
        let mut tokens = errors.to_compile_error();
        tokens.extend(quote!(#item));
        return Ok(tokens);
    }
    Ok(generate(&args, &item, &methods))
}

fn combine(errors: &mut Option<Error>, err: Error) {
    match errors {
        Some(errors) => errors.combine(err),
        None => *errors = Some(err),
    }
}

const USAGE: &str = "a service method is one of `async fn m(&self, ctx: CallContext, req: Req) -> Result<Resp, E>` (unary), `(&self, ctx: CallContext, req: Req, out: Outgoing<Resp>) -> Result<(), E>` (server stream), `(&self, ctx: CallContext, reqs: Incoming<Req>) -> Result<Resp, E>` (client stream), `(&self, ctx: CallContext, reqs: Incoming<Req>, out: Outgoing<Resp>) -> Result<(), E>` (bidi)";

/// Checks one method and finds its shape and types; strips `#[idempotent]`.
fn method_of(method: &mut TraitItemFn) -> syn::Result<Method> {
    let sig = &method.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new(
            sig.fn_token.span(),
            "a service method must be `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(
            sig.generics.span(),
            "a service method cannot be generic: its request and response types are on the wire",
        ));
    }
    if method.default.is_some() {
        return Err(Error::new(
            sig.ident.span(),
            "a service method has no default body: implement it on your own type",
        ));
    }
    if ["new", "with_service"].contains(&sig.ident.to_string().as_str()) {
        return Err(Error::new(
            sig.ident.span(),
            "`new` and `with_service` are the typed client's constructors: name the method otherwise",
        ));
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(receiver))
            if receiver.reference.is_some() && receiver.mutability.is_none() =>
        {
            // `&self`, as it should be.
            let _ = receiver;
        }
        _ => {
            return Err(Error::new(
                sig.ident.span(),
                "a service method takes `&self` first (the handler is shared by every call)",
            ));
        }
    }
    let inputs: Vec<&Type> = sig
        .inputs
        .iter()
        .skip(1)
        .filter_map(|arg| match arg {
            FnArg::Typed(typed) => Some(&*typed.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
    if inputs.len() != 2 && inputs.len() != 3 {
        let span = match inputs.get(3) {
            Some(extra) => extra.span(),
            None => sig.ident.span(),
        };
        let found = inputs.len();
        return Err(Error::new(
            span,
            format!("expected 2 or 3 arguments after `&self`, found {found}: {USAGE}"),
        ));
    }
    if last_ident(inputs[0]).as_deref() != Some("CallContext") {
        return Err(Error::new(
            inputs[0].span(),
            "the first argument after `&self` is the call's `CallContext`",
        ));
    }
    let (ok, error) = result_types(&sig.output)?;
    let incoming = wrapped(inputs[1], "Incoming");
    let (shape, request, response) = if inputs.len() == 2 {
        if wrapped(inputs[1], "Outgoing").is_some() {
            return Err(Error::new(inputs[1].span(), USAGE));
        }
        match incoming {
            Some(request) => (Shape::ClientStream, request, ok),
            None => (Shape::Unary, inputs[1].clone(), ok),
        }
    } else {
        let Some(response) = wrapped(inputs[2], "Outgoing") else {
            return Err(Error::new(
                inputs[2].span(),
                "the third argument of a streaming method is its `Outgoing<Resp>`",
            ));
        };
        if !is_unit(&ok) {
            return Err(Error::new(
                ok.span(),
                "a method that answers on an `Outgoing` returns `Result<(), E>`",
            ));
        }
        match incoming {
            Some(request) => (Shape::Bidi, request, response),
            None => (Shape::ServerStream, inputs[1].clone(), response),
        }
    };
    let before = method.attrs.len();
    method
        .attrs
        .retain(|attr| !attr.path().is_ident("idempotent"));
    let idempotent = method.attrs.len() != before;
    Ok(Method {
        item: method.clone(),
        shape,
        idempotent,
        request,
        response,
        error,
    })
}

fn last_ident(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

/// `T` when `ty` is `wrapper<T>` (by its last path segment).
fn wrapped(ty: &Type, wrapper: &str) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let segment = path.path.segments.last()?;
    if segment.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    match args.args.first() {
        Some(GenericArgument::Type(inner)) if args.args.len() == 1 => Some(inner.clone()),
        _ => None,
    }
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty())
}

/// `(T, E)` of a `Result<T, E>` return type.
fn result_types(output: &ReturnType) -> syn::Result<(Type, Type)> {
    let expected = "a service method returns `Result<Resp, E>` where `E: Into<ServiceError>`";
    let ReturnType::Type(_, ty) = output else {
        return Err(Error::new(output.span(), expected));
    };
    let Type::Path(path) = &**ty else {
        return Err(Error::new(ty.span(), expected));
    };
    let Some(segment) = path.path.segments.last() else {
        return Err(Error::new(ty.span(), expected));
    };
    if segment.ident != "Result" {
        return Err(Error::new(ty.span(), expected));
    }
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return Err(Error::new(ty.span(), expected));
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [ok, error] => Ok(((*ok).clone(), (*error).clone())),
        _ => Err(Error::new(ty.span(), expected)),
    }
}

/// `reserve_stock` → `ReserveStock`.
fn upper_camel(name: &str) -> String {
    name.split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// `InventoryStore` → `inventory_store`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn generate(args: &Args, item: &ItemTrait, methods: &[Method]) -> TokenStream2 {
    let krate = &args.krate;
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let trait_name = trait_ident.to_string();
    let service_name = args.name.clone().unwrap_or_else(|| snake(&trait_name));
    let server = format_ident!("{}Server", trait_ident);
    let client = format_ident!("{}Client", trait_ident);
    let attrs = &item.attrs;

    // (a) The handler trait: the same methods, each returning a `Send` future.
    let trait_methods = methods.iter().map(|method| {
        let sig = &method.item.sig;
        let attrs = &method.item.attrs;
        let ident = &sig.ident;
        let inputs = &sig.inputs;
        let ReturnType::Type(_, output) = &sig.output else {
            return TokenStream2::new();
        };
        quote_spanned! {sig.span()=>
            #(#attrs)*
            fn #ident(#inputs) -> impl ::core::future::Future<Output = #output> + ::core::marker::Send;
        }
    });

    // (b) The registration: one `Endpoint` per method, as a closure would build it.
    let endpoints = methods.iter().map(|method| {
        let ident = &method.item.sig.ident;
        let endpoint_name = format!("{}.{}", trait_name, upper_camel(&ident.to_string()));
        let (request, response, error) = (&method.request, &method.response, &method.error);
        let convert = quote! {
            .map_err(<#error as ::core::convert::Into<#krate::ServiceError>>::into)
        };
        let build = match method.shape {
            Shape::Unary => quote! {
                #krate::Endpoint::unary(#endpoint_name, move |ctx: #krate::CallContext, req: #request| {
                    let handler = ::core::clone::Clone::clone(&handler);
                    async move { <S as #trait_ident>::#ident(&*handler, ctx, req).await #convert }
                })
            },
            Shape::ServerStream => quote! {
                #krate::Endpoint::server_stream(#endpoint_name, move |ctx: #krate::CallContext, req: #request, out: #krate::Outgoing<#response>| {
                    let handler = ::core::clone::Clone::clone(&handler);
                    async move { <S as #trait_ident>::#ident(&*handler, ctx, req, out).await #convert }
                })
            },
            Shape::ClientStream => quote! {
                #krate::Endpoint::client_stream(#endpoint_name, move |ctx: #krate::CallContext, reqs: #krate::Incoming<#request>| {
                    let handler = ::core::clone::Clone::clone(&handler);
                    async move { <S as #trait_ident>::#ident(&*handler, ctx, reqs).await #convert }
                })
            },
            Shape::Bidi => quote! {
                #krate::Endpoint::bidi_stream(#endpoint_name, move |ctx: #krate::CallContext, reqs: #krate::Incoming<#request>, out: #krate::Outgoing<#response>| {
                    let handler = ::core::clone::Clone::clone(&handler);
                    async move { <S as #trait_ident>::#ident(&*handler, ctx, reqs, out).await #convert }
                })
            },
        };
        let idempotent = method.idempotent.then(|| quote!(.idempotent()));
        quote! {
            {
                let handler = ::core::clone::Clone::clone(&self.handler);
                #build
                    #idempotent
                    .meta(#krate::REQUEST_SCHEMA_KEY, #krate::__private::schema::<#request>())
                    .meta(#krate::RESPONSE_SCHEMA_KEY, #krate::__private::schema::<#response>())
            }
        }
    });

    // (c) The typed client.
    let client_methods = methods.iter().map(|method| {
        let ident = &method.item.sig.ident;
        let with = format_ident!("{}_with", ident);
        let endpoint_name = format!("{}.{}", trait_name, upper_camel(&ident.to_string()));
        let (request, response) = (&method.request, &method.response);
        let doc = format!("Calls `{endpoint_name}`");
        let doc_with = format!("Calls `{endpoint_name}` with `options`");
        match method.shape {
            Shape::Unary => quote! {
                #[doc = #doc]
                #[doc = "."]
                pub async fn #ident(&self, req: &#request) -> ::core::result::Result<#response, #krate::ServiceError> {
                    self.client.call(&self.service, #endpoint_name, req).await
                }
                #[doc = #doc_with]
                #[doc = "; the response comes with its headers."]
                pub async fn #with(&self, req: &#request, options: #krate::CallOptions) -> ::core::result::Result<#krate::WithHeaders<#response>, #krate::ServiceError> {
                    self.client.call_with(&self.service, #endpoint_name, req, options).await
                }
            },
            Shape::ServerStream => quote! {
                #[doc = #doc]
                #[doc = ": one request, a stream of responses."]
                pub async fn #ident(&self, req: &#request) -> ::core::result::Result<#krate::Incoming<#response>, #krate::ServiceError> {
                    self.client.server_stream(&self.service, #endpoint_name, req, #krate::CallOptions::default()).await
                }
                #[doc = #doc_with]
                #[doc = "."]
                pub async fn #with(&self, req: &#request, options: #krate::CallOptions) -> ::core::result::Result<#krate::Incoming<#response>, #krate::ServiceError> {
                    self.client.server_stream(&self.service, #endpoint_name, req, options).await
                }
            },
            Shape::ClientStream => quote! {
                #[doc = #doc]
                #[doc = ": send requests, then `finish` for the one response."]
                pub async fn #ident(&self) -> ::core::result::Result<#krate::ClientStreaming<#request, #response>, #krate::ServiceError> {
                    #krate::__private::client_stream(&self.client, &self.service, #endpoint_name, #krate::CallOptions::default()).await
                }
                #[doc = #doc_with]
                #[doc = "."]
                pub async fn #with(&self, options: #krate::CallOptions) -> ::core::result::Result<#krate::ClientStreaming<#request, #response>, #krate::ServiceError> {
                    #krate::__private::client_stream(&self.client, &self.service, #endpoint_name, options).await
                }
            },
            Shape::Bidi => quote! {
                #[doc = #doc]
                #[doc = ": requests go out on the `Outgoing`, responses come back on the `Incoming`."]
                pub async fn #ident(&self) -> ::core::result::Result<(#krate::Outgoing<#request>, #krate::Incoming<#response>), #krate::ServiceError> {
                    #krate::__private::stream(&self.client, &self.service, #endpoint_name, #krate::CallOptions::default()).await
                }
                #[doc = #doc_with]
                #[doc = "."]
                pub async fn #with(&self, options: #krate::CallOptions) -> ::core::result::Result<(#krate::Outgoing<#request>, #krate::Incoming<#response>), #krate::ServiceError> {
                    #krate::__private::stream(&self.client, &self.service, #endpoint_name, options).await
                }
            },
        }
    });

    let server_doc = format!(
        "The endpoints of a [`{trait_name}`] implementation, for `Service::handle`: the state is held in one `Arc` that every endpoint shares."
    );
    let client_doc = format!(
        "A typed client of the `{trait_name}` endpoints (service `{service_name}` unless told otherwise)."
    );
    let span = Span::call_site();
    quote_spanned! {span=>
        #(#attrs)*
        #vis trait #trait_ident: ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#trait_methods)*
        }

        #[doc = #server_doc]
        #vis struct #server<S> {
            handler: #krate::__private::Arc<S>,
        }

        impl<S: #trait_ident> #server<S> {
            /// Wraps the handler's state, shared by every endpoint.
            pub fn new(handler: S) -> Self {
                Self { handler: #krate::__private::Arc::new(handler) }
            }

            /// Uses state already shared.
            pub fn from_arc(handler: #krate::__private::Arc<S>) -> Self {
                Self { handler }
            }
        }

        impl<S> ::core::clone::Clone for #server<S> {
            fn clone(&self) -> Self {
                Self { handler: ::core::clone::Clone::clone(&self.handler) }
            }
        }

        impl<S> ::core::fmt::Debug for #server<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server)).finish_non_exhaustive()
            }
        }

        impl<S: #trait_ident> #krate::ServiceHandler for #server<S> {
            fn endpoints(self) -> ::std::vec::Vec<#krate::Endpoint> {
                ::std::vec![#(#endpoints),*]
            }
        }

        #[doc = #client_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client {
            client: #krate::Client,
            service: #krate::__private::Arc<str>,
        }

        impl #client {
            /// The service name this client calls by default.
            pub const SERVICE: &'static str = #service_name;

            /// Calls the service named [`Self::SERVICE`] through `client`.
            pub fn new(client: &#krate::Client) -> Self {
                Self::with_service(client, Self::SERVICE)
            }

            /// Calls the service named `service` through `client`.
            pub fn with_service(client: &#krate::Client, service: &str) -> Self {
                Self {
                    client: ::core::clone::Clone::clone(client),
                    service: ::core::convert::From::from(service),
                }
            }

            #(#client_methods)*
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{snake, upper_camel};

    #[test]
    fn endpoint_and_service_names_are_go_micros() {
        assert_eq!(upper_camel("reserve"), "Reserve");
        assert_eq!(upper_camel("reserve_stock"), "ReserveStock");
        assert_eq!(upper_camel("get_v2__item"), "GetV2Item");
        assert_eq!(snake("Inventory"), "inventory");
        assert_eq!(snake("InventoryStore"), "inventory_store");
    }
}
