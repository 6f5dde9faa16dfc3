//! Single-use guest links: the provider asks, the room mints a token, the guest
//! presents it once.
//!
//! A token is `base64url(n ‖ HMAC-SHA256(room key, tag ‖ appointment ‖ n))` for the
//! room's n-th invitation. The room key is random per room and comes from the caller,
//! so the room stays deterministic and nobody can forge a token without the key. Only
//! the newest invitation is valid: asking again revokes an unused link. A link seats a
//! guest once; while that guest's seat is held for reconnection the same link lets the
//! guest back in, and once the guest has left the link is spent.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::{ErrorCode, Rejection};
use crate::protocol::Role;
use crate::time::Millis;

/// Domain separation: these MACs mean nothing anywhere else.
const TAG: &[u8] = b"carewire/consult/v1/guest-link\0";
const MAC_BYTES: usize = 32;
const TOKEN_BYTES: usize = 4 + MAC_BYTES;

/// The room's secret for guest links: 32 random bytes the caller draws when it creates
/// the room.
#[derive(Clone)]
pub struct GuestLinkKey([u8; 32]);

impl GuestLinkKey {
    pub fn from_bytes(bytes: [u8; 32]) -> GuestLinkKey {
        GuestLinkKey(bytes)
    }
}

impl fmt::Debug for GuestLinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GuestLinkKey(<redacted>)")
    }
}

/// Where an invitation is in its single life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InviteState {
    /// Minted, not yet used; valid until it expires.
    Issued { expires: Millis },
    /// A guest holds the seat with it.
    Redeemed,
    /// The guest left, or a newer invitation replaced it.
    Spent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invite {
    pub(crate) number: u32,
    pub(crate) role: Role,
    pub(crate) state: InviteState,
}

#[derive(Debug)]
pub(crate) struct GuestInvites {
    key: GuestLinkKey,
    appointment: Uuid,
    issued: u32,
    current: Option<Invite>,
}

impl GuestInvites {
    pub(crate) fn new(key: GuestLinkKey, appointment: Uuid) -> GuestInvites {
        GuestInvites {
            key,
            appointment,
            issued: 0,
            current: None,
        }
    }

    /// Mints the next invitation, revoking any earlier one, and returns its number
    /// and token.
    pub(crate) fn issue(&mut self, role: Role, expires: Millis) -> (u32, String) {
        self.issued = self.issued.saturating_add(1);
        let number = self.issued;
        self.current = Some(Invite {
            number,
            role,
            state: InviteState::Issued { expires },
        });
        let mut token = Vec::with_capacity(TOKEN_BYTES);
        token.extend_from_slice(&number.to_be_bytes());
        token.extend_from_slice(&self.mac(number).finalize().into_bytes());
        (
            number,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token),
        )
    }

    /// The invitation `token` names, if it is genuine and the newest, and is either
    /// unused and unexpired or held by a seated guest. Whether a held seat may be taken
    /// back is the room's call.
    pub(crate) fn check(&self, token: &str, now: Millis) -> Result<Invite, Rejection> {
        let invalid = || {
            Rejection::new(
                ErrorCode::GuestLinkInvalid,
                "guest link is invalid, expired or used",
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid())?;
        let (number, mac) = bytes.split_at_checked(4).ok_or_else(invalid)?;
        let number = u32::from_be_bytes(number.try_into().map_err(|_| invalid())?);
        self.mac(number).verify_slice(mac).map_err(|_| invalid())?;
        match self.current {
            Some(invite) if invite.number == number => match invite.state {
                InviteState::Issued { expires } if now < expires => Ok(invite),
                InviteState::Redeemed => Ok(invite),
                _ => Err(invalid()),
            },
            _ => Err(invalid()),
        }
    }

    pub(crate) fn redeem(&mut self, number: u32) {
        self.set_state(number, InviteState::Redeemed);
    }

    pub(crate) fn spend(&mut self, number: u32) {
        self.set_state(number, InviteState::Spent);
    }

    fn set_state(&mut self, number: u32, state: InviteState) {
        if let Some(invite) = self.current.as_mut().filter(|invite| invite.number == number) {
            invite.state = state;
        }
    }

    fn mac(&self, number: u32) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key.0).expect("HMAC takes keys of any length");
        mac.update(TAG);
        mac.update(self.appointment.as_bytes());
        mac.update(&number.to_be_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invites() -> GuestInvites {
        GuestInvites::new(GuestLinkKey::from_bytes([7; 32]), Uuid::from_u128(42))
    }

    const LATER: Millis = Millis::from_millis(60_000);

    #[test]
    fn a_fresh_token_names_its_invitation() {
        let mut invites = invites();
        let (number, token) = invites.issue(Role::Interpreter, LATER);
        let invite = invites.check(&token, Millis::from_millis(0)).unwrap();
        assert_eq!(invite.number, number);
        assert_eq!(invite.role, Role::Interpreter);
    }

    #[test]
    fn an_expired_unused_token_is_invalid() {
        let mut invites = invites();
        let (_, token) = invites.issue(Role::Guest, LATER);
        let err = invites.check(&token, LATER).unwrap_err();
        assert_eq!(err.code, ErrorCode::GuestLinkInvalid);
    }

    #[test]
    fn a_newer_invitation_revokes_the_older_link() {
        let mut invites = invites();
        let (_, first) = invites.issue(Role::Guest, LATER);
        let (_, second) = invites.issue(Role::Guest, LATER);
        assert!(invites.check(&first, Millis::from_millis(0)).is_err());
        assert!(invites.check(&second, Millis::from_millis(0)).is_ok());
    }

    #[test]
    fn a_spent_link_is_invalid_even_before_it_expires() {
        let mut invites = invites();
        let (number, token) = invites.issue(Role::Guest, LATER);
        invites.redeem(number);
        invites.spend(number);
        assert!(invites.check(&token, Millis::from_millis(0)).is_err());
    }

    #[test]
    fn a_token_from_another_room_or_a_tampered_token_is_invalid() {
        let mut ours = invites();
        let mut theirs = GuestInvites::new(GuestLinkKey::from_bytes([8; 32]), Uuid::from_u128(42));
        ours.issue(Role::Guest, LATER);
        let (_, foreign) = theirs.issue(Role::Guest, LATER);
        assert!(ours.check(&foreign, Millis::from_millis(0)).is_err());

        let (_, mut token) = ours.issue(Role::Guest, LATER);
        let last = token.pop().map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
        token.push(last);
        assert!(ours.check(&token, Millis::from_millis(0)).is_err());
        assert!(ours.check("not base64 at all!", Millis::from_millis(0)).is_err());
    }
}
