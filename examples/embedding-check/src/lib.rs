//! A scratch crate with only `blue-green-core` and `blue-green-router` as dependencies: it
//! compiles the process runtime of docs/embedding.md (the very file the embedding example
//! uses), so the docs' trait impl needs no other dependency (no `async-trait`, no `tokio`).

#![forbid(unsafe_code)]

#[path = "../../embedding/runtime.rs"]
mod runtime;

pub use runtime::ProcessRuntime;

/// The router side of the tool, with the same two dependencies.
pub fn router(
    prefix: &std::path::Path,
) -> Result<blue_green_router::NginxRouter, blue_green_router::Error> {
    let nginx = blue_green_router::PrivateNginx::new(prefix, "app", 8080);
    blue_green_router::NginxRouter::new(nginx.router_config())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_docs_show_the_runtime_that_compiles_here() {
        let docs = include_str!("../../../docs/embedding.md");
        let runtime = include_str!("../../embedding/runtime.rs");
        assert!(
            docs.contains(runtime),
            "docs/embedding.md must hold examples/embedding/runtime.rs verbatim"
        );
    }
}
