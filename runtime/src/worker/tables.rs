//! Building the instance's tables at startup (ADR 0003): its slots, its connection entries and
//! its I/O buffer pairs, each a `SharedTable` any worker may claim entries of. Runs before the
//! workers start; nothing here is on the request path.

use std::sync::Arc;

use cella_arena::{ConnectionMemory, WorkerMemory};

use super::{Conn, Settings, Slot, SOCKET_TOKEN_BASE};
use crate::net::SlotSockets;
use crate::pool::SharedTable;

/// The instance's slots, one table shared by every worker (ADR 0003): each worker's region
/// carve contributes its slots' memory, and any worker may claim any slot.
pub(crate) fn slot_table(
    memories: &mut [WorkerMemory],
    settings: &Settings,
) -> Arc<SharedTable<Slot>> {
    let sockets_max = settings.slot_sockets_max;
    let slots = memories
        .iter_mut()
        .flat_map(|memory| std::mem::take(&mut memory.slots))
        .enumerate()
        .map(|(index, (memory, arena))| {
            let token_base = SOCKET_TOKEN_BASE + index * sockets_max.max(1);
            Slot::new(memory, arena, SlotSockets::new(sockets_max, token_base))
        })
        .collect();
    // Quarantine: a released slot is claimed again last (see `pool.rs`).
    Arc::new(if settings.quarantine {
        SharedTable::new_fifo(slots)
    } else {
        SharedTable::new(slots)
    })
}

/// The instance's connection table: `connections_max` entries, any worker may take any.
pub(crate) fn conn_table(connections_max: usize) -> Arc<SharedTable<Conn>> {
    Arc::new(SharedTable::new((0..connections_max).map(|_| Conn::new()).collect()))
}

/// The instance's I/O buffer pairs, from every worker's region carve.
pub(crate) fn buffer_table(
    memories: &mut [WorkerMemory],
) -> Arc<SharedTable<Option<ConnectionMemory>>> {
    let pairs =
        memories.iter_mut().flat_map(|memory| std::mem::take(&mut memory.connections)).map(Some);
    Arc::new(SharedTable::new(pairs.collect()))
}
