//! Every REST request body and query string, as the handlers parse them: the first byte picks which.
#![no_main]
use herald_proto::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else { return };
    match which % 10 {
        0 => drop(serde_json::from_slice::<Credentials>(body)),
        1 => drop(serde_json::from_slice::<CreateConversation>(body)),
        2 => drop(serde_json::from_slice::<SendMessage>(body)),
        3 => drop(serde_json::from_slice::<EditMessage>(body)),
        4 => drop(serde_json::from_slice::<UpdateConversation>(body)),
        5 => drop(serde_json::from_slice::<AddMember>(body)),
        6 => drop(serde_json::from_slice::<UpdateMember>(body)),
        7 => drop(serde_json::from_slice::<UpdateCursor>(body)),
        8 => drop(serde_json::from_slice::<RefreshRequest>(body)),
        _ => drop(serde_urlencoded::from_bytes::<HistoryQuery>(body)),
    }
});
