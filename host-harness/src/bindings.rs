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
    with: { "wasi:io": wasmtime_wasi::p2::bindings::io },
});

pub use exports::status_push::reporter::reporter::{
    Auth, Config, ConfigError, Credentials, Delivery, FormatFailure, HttpFailure, Outcome,
    PushError, PushFailure, ResultMode, Signing, SigningScheme, SkipReason,
};
pub use exports::status_push::reporter::types::{
    Build, BuildEvent, Builder, Buildrequest, Buildset, Log, LogContent, Patch, Property,
    Sourcestamp, Step, StepUrl,
};
