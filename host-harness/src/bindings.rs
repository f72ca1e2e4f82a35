//! Host-side bindings generated from `wit/world.wit`, the single source of truth.

// The host needs only the component's exports; its wasi imports are linked from
// wasmtime-wasi and wasmtime-wasi-http, so this view of the world leaves them out.
wasmtime::component::bindgen!({
    path: "../wit",
    inline: "
        package status-push:host;
        world reporter-exports {
            export status-push:reporter/types@0.1.0;
            export status-push:reporter/reporter@0.1.0;
            export status-push:reporter/documents@0.1.0;
        }
    ",
    world: "status-push:host/reporter-exports",
    exports: { default: async },
});

pub use exports::status_push::reporter::reporter::{
    Auth, Config, ConfigError, Credentials, FormatFailure, HttpFailure, Outcome, PushError,
    ResultMode, SkipReason,
};
pub use exports::status_push::reporter::types::{
    Build, BuildEvent, Builder, Buildrequest, Buildset, Log, Patch, Property, Sourcestamp, Step,
    StepUrl,
};
