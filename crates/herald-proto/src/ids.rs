//! Identifiers. All are UUIDv7 (time-ordered, unique across nodes without coordination) wrapped in newtypes
//! so a user id can never be passed where a conversation id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The 16 bytes of the id, big-endian: the form used in store keys and for hashing.
            pub fn to_bytes(self) -> [u8; 16] {
                *self.0.as_bytes()
            }

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A user account.
    UserId
);
id_type!(
    /// One login of a user: a phone, a browser, a bench client. Each has its own sync position.
    DeviceId
);
id_type!(
    /// A direct or group conversation; also the partition key of the message log.
    ConversationId
);
id_type!(
    /// A stored message, unique across the whole deployment.
    MessageId
);
id_type!(
    /// One upload: its state, its owner, and (once ready) the stored content it points to.
    MediaId
);
id_type!(
    /// A user's report of a message or of another user, for the server's admins.
    ReportId
);
