//! `#[tool]`: turns a function over an argument struct into a Crogia tool.
//!
//! ```text
//! /// Count the lines of a text file.          <- the tool's description
//! #[tool]
//! fn count_lines(args: CountLinesArgs) -> ToolResult { ... }
//! // or, to read the operator's config:
//! fn count_lines(args: CountLinesArgs, ctx: &Context) -> ToolResult { ... }
//! ```
//!
//! Beside the function it defines a braced struct of the same name (structs
//! with braces live only in the type namespace, so the two do not clash) that
//! implements `crogia_plugin_sdk::Tool`; `export_tools!` names it.

use proc_macro::TokenStream;
use quote::quote;
use syn::{Expr, FnArg, ItemFn, Lit, Meta, parse_macro_input, spanned::Spanned};

#[proc_macro_attribute]
pub fn tool(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    match expand(attr.into(), func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(attr: proc_macro2::TokenStream, func: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    // `#[tool(name = "other_name")]` overrides the function name.
    let mut name = func.sig.ident.to_string();
    if !attr.is_empty() {
        let meta: syn::MetaNameValue = syn::parse2(attr)?;
        if !meta.path.is_ident("name") {
            return Err(syn::Error::new(
                meta.path.span(),
                "expected `name = \"...\"`",
            ));
        }
        match meta.value {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Str(s), ..
            }) => name = s.value(),
            other => return Err(syn::Error::new(other.span(), "expected a string literal")),
        }
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(syn::Error::new(
            func.sig.ident.span(),
            "tool names use only a-z, 0-9 and _",
        ));
    }

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
