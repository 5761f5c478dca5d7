//! Every REST request body and query string, as the handlers parse them, and the body a node forwards to
//! another (`POST /internal/v1/forward`): the first byte picks which.
#![no_main]
use herald_core::log::LogRecord;
use herald_proto::*;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

/// How many kinds of input the first byte picks among; scripts/fuzz seeds every body of docs/api.md under each.
const KINDS: u8 = 21;

fn json<T: DeserializeOwned>(body: &[u8]) {
    drop(serde_json::from_slice::<T>(body));
}

fn query<T: DeserializeOwned>(body: &[u8]) {
    drop(serde_urlencoded::from_bytes::<T>(body));
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else { return };
    match which % KINDS {
        0 => json::<Credentials>(body),
        1 => json::<CreateConversation>(body),
        2 => json::<SendMessage>(body),
        3 => json::<EditMessage>(body),
        4 => json::<UpdateConversation>(body),
        5 => json::<AddMember>(body),
        6 => json::<UpdateMember>(body),
        7 => json::<UpdateCursor>(body),
        8 => json::<RefreshRequest>(body),
        9 => query::<HistoryQuery>(body),
        10 => json::<CreateUpload>(body),
        11 => json::<Takedown>(body),
        12 => json::<BlockImage>(body),
        13 => json::<LogRecord>(body),
        14 => query::<ConversationListQuery>(body),
        15 => query::<FindUserQuery>(body),
        16 => query::<SignedUrlQuery>(body),
        17 => json::<CreateReport>(body),
        18 => json::<ResolveReport>(body),
        19 => query::<ReportListQuery>(body),
        _ => json::<SuspendUser>(body),
    }
});
