//! One component instance's host state and the store around it: the same for a
//! [`crate::Reporter`] and for each request the relay handles.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::client::{Client, TlsPolicy};
use crate::guest_log::GuestLog;
use crate::limits::Limits;
use crate::meter::MemoryMeter;
use crate::sandbox::{Opening, OriginGuard};

/// How often the engine's epoch advances; call budgets are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Per-instance host state: WASI with no files or arguments and at most one environment
/// variable; stderr into the host's log; wasi:http through the origin guard.
pub(crate) struct Host {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    guard: OriginGuard,
    pub(crate) meter: MemoryMeter,
}

impl Host {
    /// Opens the sandbox to one origin only, with its TLS policy.
    pub(crate) fn open(&mut self, opening: &Opening) {
        self.guard.allowed = opening.origin.clone();
        self.guard.tls = opening.tls.clone();
    }
}

/// A store for one instance: memory capped by `limits`, wall time by the deadline, and
/// the network closed unless `opened` opens it to one origin, with that call budget
/// (otherwise the limits' parse budget). `env` is the one environment variable the
/// instance sees (the relay's configuration).
pub(crate) fn new_store(
    engine: &Engine,
    client: Arc<Client>,
    limits: &Limits,
    opened: Option<(&Opening, Duration)>,
    env: Option<(&str, &str)>,
) -> Store<Host> {
    let mut wasi = WasiCtx::builder();
    wasi.stderr(GuestLog);
    if let Some((name, value)) = env {
        wasi.env(name, value);
    }
    let mut host = Host {
        table: ResourceTable::new(),
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        guard: OriginGuard {
            allowed: None,
            tls: TlsPolicy::verified(None),
            client,
        },
        meter: MemoryMeter::new(limits.memory_bytes),
    };
    if let Some((opening, _)) = opened {
        host.open(opening);
    }
    let mut store = Store::new(engine, host);
    store.limiter(|host| &mut host.meter);
    set_budget(
        &mut store,
        opened.map_or(limits.parse_budget, |(_, budget)| budget),
    );
    store
}

/// Lets the next call into the instance run for `budget` of wall time.
pub(crate) fn set_budget(store: &mut Store<Host>, budget: Duration) {
    let ticks = (budget.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.guard,
        }
    }
}
