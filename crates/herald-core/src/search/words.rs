//! How text is cut into the words search knows: runs of letters and digits (Unicode), lowercased. One
//! definition for the query, for both backends' indexes and for the highlighting, so a word found is the word
//! marked, whatever the backend.

use herald_proto::Message;

/// Longer words are cut to this many characters (in the index and in a query alike), so a pasted blob cannot
/// make an index entry too large.
pub const MAX_WORD_CHARS: usize = 64;

/// The words of `text`, in order, lowercased.
pub fn words(text: &str) -> Vec<String> {
    spans(text).map(|(start, end)| normalise(&text[start..end])).collect()
}

/// The words a message is found by: its body's, unless it is deleted or a notice (those have none).
pub fn indexed_words(message: &Message) -> Vec<String> {
    if message.deleted || message.system.is_some() { Vec::new() } else { words(&message.body) }
}

/// Whether `text` holds, for every term, a word that starts with it: what both backends answer, checked again
/// on the message as it is now (an edit may be newer than the index).
pub fn matches_all(text: &str, terms: &[String]) -> bool {
    let words = words(text);
    terms.iter().all(|t| words.iter().any(|w| w.starts_with(t.as_str())))
}

/// The byte ranges of the words of `text`.
pub(crate) fn spans(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        let start = loop {
            let (i, c) = chars.next()?;
            if c.is_alphanumeric() {
                break i;
            }
        };
        let mut end = text.len();
        while let Some(&(i, c)) = chars.peek() {
            if !c.is_alphanumeric() {
                end = i;
                break;
            }
            chars.next();
        }
        Some((start, end))
    })
}

pub(crate) fn normalise(word: &str) -> String {
    word.chars().flat_map(char::to_lowercase).take(MAX_WORD_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_letters_and_digits_lowercased() {
        assert_eq!(
            words("Hello, World! meet @ 10:30 — Zoë's café"),
            ["hello", "world", "meet", "10", "30", "zoë", "s", "café"]
        );
        assert_eq!(words("  ...  "), Vec::<String>::new());
        assert_eq!(words("ÉCOLE"), ["école"]);
        assert_eq!(words(&"a".repeat(100))[0].chars().count(), MAX_WORD_CHARS);
    }

    #[test]
    fn every_term_must_start_a_word() {
        let terms = words("meet TOMORROW");
        assert!(matches_all("Meeting tomorrow at noon", &terms));
        assert!(!matches_all("Meeting today", &terms));
        assert!(!matches_all("unmeet tomorrow", &terms), "a term matches the start of a word, not its middle");
    }
}
