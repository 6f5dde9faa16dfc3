//! A participant's numbered stream of room events, and the recent part of it kept for
//! replay.
//!
//! Bounded by count and by bytes: a participant who stays away while descriptions pile
//! up costs at most the configured memory. When the message a resuming client needs
//! has been dropped, resume is refused and the client starts afresh, which is always
//! correct, only slower.

use std::collections::VecDeque;

use crate::protocol::{ServerFrame, ServerMessage};

#[derive(Debug)]
pub(crate) struct Outbox {
    /// The last sequence number assigned; the first message gets 1.
    head: u64,
    kept: VecDeque<(ServerFrame, usize)>,
    kept_bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Outbox {
        Outbox {
            head: 0,
            kept: VecDeque::new(),
            kept_bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// Numbers `message`, keeps it for replay, and returns the frame to send.
    pub(crate) fn push(&mut self, message: ServerMessage) -> ServerFrame {
        self.head += 1;
        let frame = ServerFrame {
            seq: Some(self.head),
            message,
        };
        let bytes = approximate_size(&frame.message);
        self.kept.push_back((frame.clone(), bytes));
        self.kept_bytes += bytes;
        while self.kept.len() > self.max_messages || (self.kept_bytes > self.max_bytes && self.kept.len() > 1)
        {
            if let Some((_, bytes)) = self.kept.pop_front() {
                self.kept_bytes -= bytes;
            }
        }
        frame
    }

    /// Everything after `last_seen`, or `None` when some of it is gone (or `last_seen`
    /// is from the future, which a well-behaved client never says).
    pub(crate) fn after(&self, last_seen: u64) -> Option<Vec<ServerFrame>> {
        let oldest_kept = self.head + 1 - self.kept.len() as u64;
        if last_seen > self.head || last_seen + 1 < oldest_kept {
            return None;
        }
        Some(
            self.kept
                .iter()
                .filter(|(frame, _)| frame.seq.is_some_and(|seq| seq > last_seen))
                .map(|(frame, _)| frame.clone())
                .collect(),
        )
    }
}

/// What a kept message costs, near enough: the bulky text fields plus a constant for
/// the rest.
fn approximate_size(message: &ServerMessage) -> usize {
    const OVERHEAD: usize = 64;
    OVERHEAD
        + match message {
            ServerMessage::Offer { sdp, .. } | ServerMessage::Answer { sdp, .. } => sdp.as_str().len(),
            ServerMessage::Candidate { candidate, .. } => candidate.candidate.len(),
            ServerMessage::GuestLink { token, .. } => token.as_str().len(),
            _ => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Opaque, Seat};

    fn event() -> ServerMessage {
        ServerMessage::PeerReconnecting { seat: Seat::Patient }
    }

    #[test]
    fn messages_are_numbered_from_one() {
        let mut outbox = Outbox::new(8, 1 << 20);
        assert_eq!(outbox.push(event()).seq, Some(1));
        assert_eq!(outbox.push(event()).seq, Some(2));
        assert_eq!(outbox.head(), 2);
    }

    #[test]
    fn replay_returns_what_came_after_the_last_seen() {
        let mut outbox = Outbox::new(8, 1 << 20);
        for _ in 0..5 {
            outbox.push(event());
        }
        let seqs: Vec<_> = outbox.after(2).unwrap().iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [Some(3), Some(4), Some(5)]);
        assert_eq!(outbox.after(5).unwrap(), []);
    }

    #[test]
    fn replay_is_refused_once_a_needed_message_was_dropped() {
        let mut outbox = Outbox::new(3, 1 << 20);
        for _ in 0..5 {
            outbox.push(event());
        }
        assert!(outbox.after(1).is_none());
        assert_eq!(outbox.after(2).unwrap().len(), 3);
    }

    #[test]
    fn replay_is_refused_for_a_seq_never_sent() {
        let mut outbox = Outbox::new(3, 1 << 20);
        outbox.push(event());
        assert!(outbox.after(2).is_none());
    }

    #[test]
    fn large_messages_are_dropped_to_stay_under_the_byte_bound() {
        let mut outbox = Outbox::new(100, 10_000);
        for _ in 0..5 {
            outbox.push(ServerMessage::Offer {
                from: Seat::Provider,
                sdp: Opaque::new("x".repeat(4_000)),
            });
        }
        assert!(outbox.after(2).is_none());
        assert_eq!(outbox.after(3).unwrap().len(), 2);
    }
}
