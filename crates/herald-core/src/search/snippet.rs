//! The part of a body shown with a result, cut into pieces so that the words the query found are marked.

use super::words::{normalise, spans};
use herald_proto::SnippetPart;

/// Characters of context kept before the first match.
const BEFORE_CHARS: usize = 40;
/// Characters a snippet holds at most (a body shorter than this is shown whole).
const SNIPPET_CHARS: usize = 200;

/// The snippet of `body` for `terms`: from a little before the first word a term starts, up to
/// [`SNIPPET_CHARS`] characters, with an ellipsis where the body was cut.
pub fn snippet(body: &str, terms: &[String]) -> Vec<SnippetPart> {
    let hits: Vec<(usize, usize)> = spans(body)
        .filter(|&(start, end)| {
            let word = normalise(&body[start..end]);
            terms.iter().any(|t| word.starts_with(t.as_str()))
        })
        .collect();
    let first = hits.first().map_or(0, |&(start, _)| start);
    let start = char_boundary_back(body, first, BEFORE_CHARS);
    let start = if start == 0 { 0 } else { word_start_after(body, start) };
    let end = body[start..].char_indices().nth(SNIPPET_CHARS).map_or(body.len(), |(i, _)| start + i);

    let mut parts = Vec::new();
    if start > 0 {
        parts.push(plain("…"));
    }
    let mut at = start;
    for (hit_start, hit_end) in hits.into_iter().filter(|&(s, e)| s >= start && e <= end) {
        if hit_start > at {
            parts.push(plain(&body[at..hit_start]));
        }
        parts.push(SnippetPart { text: body[hit_start..hit_end].to_owned(), hit: true });
        at = hit_end;
    }
    if end > at {
        parts.push(plain(&body[at..end]));
    }
    if end < body.len() {
        parts.push(plain("…"));
    }
    merge_plain(parts)
}

fn plain(text: &str) -> SnippetPart {
    SnippetPart { text: text.to_owned(), hit: false }
}

/// Adjacent plain pieces as one.
fn merge_plain(parts: Vec<SnippetPart>) -> Vec<SnippetPart> {
    let mut merged: Vec<SnippetPart> = Vec::with_capacity(parts.len());
    for part in parts {
        match merged.last_mut() {
            Some(last) if !last.hit && !part.hit => last.text.push_str(&part.text),
            _ => merged.push(part),
        }
    }
    merged
}

/// The byte index `chars` characters before `at` (or 0).
fn char_boundary_back(text: &str, at: usize, chars: usize) -> usize {
    text[..at].char_indices().rev().nth(chars.saturating_sub(1)).map_or(0, |(i, _)| i)
}

/// From `at`, the start of the next whole word (a snippet does not open in the middle of one).
fn word_start_after(text: &str, at: usize) -> usize {
    let starts_word = text[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
    if starts_word {
        return at;
    }
    text[at..].char_indices().find(|(_, c)| !c.is_alphanumeric()).map_or(at, |(i, _)| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::words;

    fn render(parts: &[SnippetPart]) -> String {
        parts.iter().map(|p| if p.hit { format!("[{}]", p.text) } else { p.text.clone() }).collect()
    }

    #[test]
    fn marks_every_word_a_term_starts() {
        let parts = snippet("Meeting at noon; the meet is on.", &words("meet"));
        assert_eq!(render(&parts), "[Meeting] at noon; the [meet] is on.");
    }

    #[test]
    fn a_long_body_is_cut_around_the_first_match() {
        let body = format!("{} needle {}", "hay ".repeat(100), "straw ".repeat(100));
        let text = render(&snippet(&body, &words("needle")));
        assert!(text.starts_with("…"), "{text}");
        assert!(text.ends_with("…"), "{text}");
        assert!(text.contains("[needle]"), "{text}");
        assert!(text.chars().count() <= SNIPPET_CHARS + 4, "{}", text.chars().count());
        assert!(text[3..].starts_with("hay") || text[3..].starts_with(' '), "cut inside a word: {text}");
    }

    #[test]
    fn works_on_any_unicode() {
        let body = "😀 ".repeat(60) + "Zoë";
        assert!(render(&snippet(&body, &words("zo"))).ends_with("[Zoë]"));
        assert_eq!(render(&snippet("no match here", &words("x"))), "no match here");
    }
}
