//! The room's tunables, with the defaults the product chose.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rate::RateLimit;

/// How a room behaves in time and in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    /// How long a dropped participant's seat is held before the others see `peer_left`.
    /// Long enough for a phone to move from Wi-Fi to mobile data.
    pub reconnect_grace: Duration,
    /// How long a room with no seated participant stays open.
    pub empty_timeout: Duration,
    /// How often clients are told to ping.
    pub ping_interval: Duration,
    /// A connection silent this long is treated as dropped: three missed pings.
    pub heartbeat_timeout: Duration,
    /// How long an unused guest link stays valid.
    pub guest_link_ttl: Duration,
    /// Messages a connection may send in a burst, and per second after it.
    pub rate_limit: RateLimit,
    /// Room events kept per participant for replay on resume, by count...
    pub outbox_messages: usize,
    /// ...and by approximate size.
    pub outbox_bytes: usize,
    /// Candidates held per sender and receiver until their description is relayed.
    pub max_pending_candidates: usize,
    /// Connections a room accepts at once, joined or not: three seats plus room for
    /// connections that are replacing or about to be replaced.
    pub max_connections: usize,
}

impl Default for RoomConfig {
    fn default() -> RoomConfig {
        RoomConfig {
            reconnect_grace: Duration::from_secs(20),
            empty_timeout: Duration::from_secs(5 * 60),
            ping_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            guest_link_ttl: Duration::from_secs(30 * 60),
            rate_limit: RateLimit::DEFAULT,
            outbox_messages: 256,
            outbox_bytes: 1024 * 1024,
            max_pending_candidates: 64,
            max_connections: 8,
        }
    }
}
