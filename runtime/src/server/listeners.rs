//! Binding what a server listens on: one SO_REUSEPORT listener per worker (or the sockets
//! systemd passed, shared out between the workers), and the admin and agent-check listeners.

use std::io;
use std::net::SocketAddr;

use cella_shared::{Config, MemoryPlan};
use socket2::{Domain, Protocol, Socket, Type};

use super::{StartError, LISTEN_BACKLOG};
use crate::worker::{self, AdminSetup};

pub(super) fn bind_listeners(
    address: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, StartError> {
    let mut listeners = Vec::with_capacity(count);
    let mut address = address;
    for _ in 0..count {
        let listener = bind_one(address)
            .map_err(|source| StartError::Io { step: "bind the listen address", source })?;
        // Port 0: the first bind picks the port; the others share it through SO_REUSEPORT.
        address = listener
            .local_addr()
            .map_err(|source| StartError::Io { step: "read the bound address", source })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// One listener per worker from the sockets given: socket `i` goes to workers `i`, `i + n`,
/// ..., as duplicated descriptors of the same socket.
pub(super) fn share_listeners(
    sockets: Vec<std::net::TcpListener>,
    workers: usize,
) -> Result<Vec<std::net::TcpListener>, StartError> {
    let step = "give each inherited listening socket a worker";
    if sockets.len() > workers {
        let message = format!("{} sockets for {workers} workers", sockets.len());
        return Err(StartError::Io {
            step,
            source: io::Error::new(io::ErrorKind::InvalidInput, message),
        });
    }
    let mut listeners = Vec::with_capacity(workers);
    for index in sockets.len()..workers {
        let copy = sockets[index % sockets.len()].try_clone();
        listeners.push(copy.map_err(|source| StartError::Io { step, source })?);
    }
    listeners.splice(0..0, sockets);
    Ok(listeners)
}

/// What [`bind_admin`] bound: worker 0's setup, and the admin and agent addresses.
pub(super) type AdminBinding = (Option<AdminSetup>, Option<SocketAddr>, Option<SocketAddr>);

/// Binds `admin_listen` and `agent_listen` when set (with SO_REUSEPORT, like the main listener,
/// so that a replacement instance can bind them before the old one leaves), and renders the
/// `/config` text.
pub(super) fn bind_admin(config: &Config, plan: &MemoryPlan) -> Result<AdminBinding, StartError> {
    let bind = |address: Option<SocketAddr>, step: &'static str| {
        let listener = address.map(bind_one).transpose();
        let listener = listener.map_err(|source| StartError::Io { step, source })?;
        let bound = listener.as_ref().map(|listener| listener.local_addr()).transpose();
        let bound = bound.map_err(|source| StartError::Io { step, source })?;
        Ok::<_, StartError>((listener, bound))
    };
    let (admin, admin_addr) = bind(config.admin_listen, "bind admin_listen")?;
    let (agent, agent_addr) = bind(config.agent_listen, "bind agent_listen")?;
    if admin.is_none() && agent.is_none() {
        return Ok((None, None, None));
    }
    let setup = AdminSetup {
        admin,
        agent,
        config_text: worker::config_text(config, plan),
        slot_arena_bytes: plan.slot_arena_size,
    };
    Ok((Some(setup), admin_addr, agent_addr))
}

fn bind_one(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}
