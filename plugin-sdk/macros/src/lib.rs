//! `#[tool]`: turns a function over an argument struct into a Crogia tool.
//!
//! ```text
//! /// Count the lines of a text file.          <- the tool's description
//! #[tool(capabilities = ["files-read"], subject = "path")]
//! fn count_lines(args: CountLinesArgs) -> ToolResult { ... }
//! // or, to read the operator's config:
//! fn count_lines(args: CountLinesArgs, ctx: &Context) -> ToolResult { ... }
//! ```
//!
//! `capabilities` lists the host capabilities the tool uses (any other host
//! call fails with `denied`); `subject` names the argument a person approves
//! when the tool needs approval; `name` overrides the function's name.
//!
//! Beside the function it defines a braced struct of the same name (structs
//! with braces live only in the type namespace, so the two do not clash) that
//! implements `crogia_plugin_sdk::Tool`; `export_tools!` names it.

use crogia_plugin_contract::{Capability, TOOL_NAME_RULE, valid_tool_name};
use proc_macro::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, FnArg, ItemFn, Lit, Meta, Token, parse_macro_input, spanned::Spanned};

#[proc_macro_attribute]
pub fn tool(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    match expand(attr.into(), func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// What `#[tool(...)]` says besides the function.
struct Attributes {
    name: Option<String>,
    capabilities: Vec<Capability>,
    subject: Option<String>,
}

fn string_literal(e: &Expr) -> syn::Result<String> {
    match e {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.value()),
        other => Err(syn::Error::new(other.span(), "expected a string literal")),
    }
}

fn parse_attributes(attr: proc_macro2::TokenStream) -> syn::Result<Attributes> {
    let mut out = Attributes {
        name: None,
        capabilities: Vec::new(),
        subject: None,
    };
    let items = Punctuated::<syn::MetaNameValue, Token![,]>::parse_terminated.parse2(attr)?;
    for item in items {
        let key = item
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        match key.as_str() {
            "name" => out.name = Some(string_literal(&item.value)?),
            "subject" => out.subject = Some(string_literal(&item.value)?),
            "capabilities" => {
                let Expr::Array(list) = &item.value else {
                    return Err(syn::Error::new(
                        item.value.span(),
                        "expected a list: capabilities = [\"files-read\", \"exec\"]",
                    ));
                };
                for e in &list.elems {
                    let name = string_literal(e)?;
                    let Some(c) = Capability::from_name(&name) else {
                        let known: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
                        return Err(syn::Error::new(
                            e.span(),
                            format!("unknown capability {name:?}; known: {}", known.join(", ")),
                        ));
                    };
                    if out.capabilities.contains(&c) {
                        return Err(syn::Error::new(
                            e.span(),
                            format!("{name:?} is listed twice"),
                        ));
                    }
                    out.capabilities.push(c);
                }
            }
            _ => {
                return Err(syn::Error::new(
                    item.path.span(),
                    "expected `name = \"...\"`, `capabilities = [...]` or `subject = \"...\"`",
                ));
            }
        }
    }
    Ok(out)
}

fn expand(attr: proc_macro2::TokenStream, func: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let attrs = parse_attributes(attr)?;
    // `#[tool(name = "other_name")]` overrides the function name.
    let name = attrs.name.unwrap_or_else(|| func.sig.ident.to_string());
    if !valid_tool_name(&name) {
        return Err(syn::Error::new(
            func.sig.ident.span(),
            format!("invalid tool name {name:?}: {TOOL_NAME_RULE}"),
        ));
    }
    let capabilities = attrs.capabilities.iter().map(|c| {
        let variant = syn::Ident::new(&format!("{c:?}"), proc_macro2::Span::call_site());
        quote! { ::crogia_plugin_sdk::Capability::#variant }
    });
    let subject = match &attrs.subject {
        Some(s) => quote! { ::core::option::Option::Some(#s) },
        None => quote! { ::core::option::Option::None },
    };

    let docs: Vec<String> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Str(s), ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    if docs.iter().all(|d| d.trim().is_empty()) {
        return Err(syn::Error::new(
            func.sig.ident.span(),
            "a tool needs a doc comment: it is the description the model reads",
        ));
    }
    let description = unwrap_paragraphs(&docs);

    let inputs: Vec<&FnArg> = func.sig.inputs.iter().collect();
    let args_ty = match inputs.first() {
        Some(FnArg::Typed(pt)) => &pt.ty,
        _ => {
            return Err(syn::Error::new(
                func.sig.span(),
                "a tool takes its argument struct first: fn my_tool(args: MyArgs) -> ToolResult",
            ));
        }
    };
    let ident = &func.sig.ident;
    let call = match inputs.len() {
        1 => quote! { #ident(args) },
        2 => quote! { #ident(args, ctx) },
        _ => {
            return Err(syn::Error::new(
                func.sig.inputs.span(),
                "a tool takes (args) or (args, ctx: &Context)",
            ));
        }
    };
    let vis = &func.vis;

    Ok(quote! {
        #func

        #[allow(non_camel_case_types)]
        #[doc(hidden)]
        #vis struct #ident {}

        impl ::crogia_plugin_sdk::Tool for #ident {
            type Args = #args_ty;
            const NAME: &'static str = #name;
            const DESCRIPTION: &'static str = #description;
            const CAPABILITIES: &'static [::crogia_plugin_sdk::Capability] = &[#(#capabilities),*];
            const SUBJECT: ::core::option::Option<&'static str> = #subject;
            #[allow(unused_variables)]
            fn call(args: Self::Args, ctx: &::crogia_plugin_sdk::Context) -> ::crogia_plugin_sdk::ToolResult {
                #call
            }
        }
    })
}

/// Joins the lines of a doc comment into paragraphs: a model reads better
/// prose without the source's hard line wraps.
fn unwrap_paragraphs(lines: &[String]) -> String {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs.join("\n\n")
}
