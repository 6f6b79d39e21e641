//! `quire agent`: runs next to a database in a private network and serves its queries to the
//! report service over one outbound WebSocket; it accepts no connections.

pub mod protocol;
