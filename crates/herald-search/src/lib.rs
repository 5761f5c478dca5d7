//! The embedded node's full-text index of messages, on tantivy. It is given each message's words already cut
//! by the core (`herald_core::search::words`: lowercased runs of letters and digits, joined by spaces here and
//! split on whitespace again by the index), so what it finds is exactly what the PostgreSQL backend finds and
//! what the core highlights. Documents are keyed by conversation and seq: indexing a message again replaces it,
//! and a message with no words is removed.
//!
//! Queries are prefix matches on every term, ranked by BM25: each term is expanded to the index's words that
//! start with it (at most [`MAX_EXPANSIONS`], the exact word first), which must all be present, scored as
//! ordinary term queries; among equal scores the newest message comes first. Only the conversations asked for are
//! searched.

use herald_proto::ConversationId;
use std::path::Path;
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery, TermSetQuery};
use tantivy::schema::{BytesOptions, FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::tokenizer::{TextAnalyzer, WhitespaceTokenizer};
use tantivy::{DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader, TantivyDocument, Term};

/// Index words a query term may stand for; a shorter prefix than that many words is cut to the first ones
/// (in byte order), the exact word always among them.
pub const MAX_EXPANSIONS: usize = 64;
/// The tokenizer: the words arrive cut, separated by single spaces.
const TOKENIZER: &str = "herald_words";
const SENT_AT: &str = "sent_at";
/// The indexing thread's buffer; tantivy's minimum is 15 MB.
const WRITER_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Io(#[from] std::io::Error),
    #[error("search index: {0}")]
    Open(String),
}

impl SearchError {
    /// Whether another writer holds the index's directory (an index closed a moment ago in this process
    /// releases it once its merges end).
    pub fn is_lock_busy(&self) -> bool {
        matches!(self, SearchError::Index(tantivy::TantivyError::LockFailure(..)))
    }
}

pub type SearchResult<T> = Result<T, SearchError>;

/// A message as the index sees it.
pub struct IndexedMessage {
    pub conversation: ConversationId,
    pub seq: u64,
    /// When it was sent (ms): among equally good results, the newest come first.
    pub sent_at: i64,
    /// Empty removes the message from the index.
    pub words: Vec<String>,
}

struct Fields {
    /// Conversation id (16 bytes) and seq (8, big-endian): the document's identity, indexed to replace it and
    /// stored to answer with.
    key: Field,
    conversation: Field,
    words: Field,
    sent_at: Field,
}

pub struct MessageIndex {
    fields: Fields,
    /// `None` once closed.
    writer: std::sync::Mutex<Option<IndexWriter>>,
    reader: IndexReader,
    /// Whether the index was created (empty) when opened: the caller must index every message again.
    created: bool,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let key = builder.add_bytes_field("key", BytesOptions::default().set_indexed().set_stored());
    let conversation = builder.add_bytes_field("conversation", BytesOptions::default().set_indexed());
    let words = builder.add_text_field(
        "words",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default().set_tokenizer(TOKENIZER).set_index_option(IndexRecordOption::WithFreqs),
        ),
    );
    let sent_at = builder.add_i64_field(SENT_AT, FAST);
    (builder.build(), Fields { key, conversation, words, sent_at })
}

fn key_bytes(conversation: ConversationId, seq: u64) -> [u8; 24] {
    let mut key = [0; 24];
    key[..16].copy_from_slice(&conversation.to_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn from_key(key: &[u8]) -> Option<(ConversationId, u64)> {
    let conversation: [u8; 16] = key.get(..16)?.try_into().ok()?;
    let seq: [u8; 8] = key.get(16..24)?.try_into().ok()?;
    Some((ConversationId::from_bytes(conversation), u64::from_be_bytes(seq)))
}

impl MessageIndex {
    /// Opens the index in `dir`, creating it when there is none, or when the one there cannot be read or was
    /// made with another schema (it is rebuilt from the messages then: see [`MessageIndex::created`]).
    pub fn open(dir: &Path) -> SearchResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| SearchError::Open(format!("create {}: {e}", dir.display())))?;
        let (schema, fields) = schema();
        let existing =
            MmapDirectory::open(dir).ok().and_then(|d| Index::open(d).ok()).filter(|index| index.schema() == schema);
        let (index, created) = match existing {
            Some(index) => (index, false),
            None => {
                // Whatever is there is of no use: start over.
                std::fs::remove_dir_all(dir).map_err(|e| SearchError::Open(format!("clear {}: {e}", dir.display())))?;
                std::fs::create_dir_all(dir)
                    .map_err(|e| SearchError::Open(format!("create {}: {e}", dir.display())))?;
                (Index::create_in_dir(dir, schema)?, true)
            }
        };
        index.tokenizers().register(TOKENIZER, TextAnalyzer::builder(WhitespaceTokenizer::default()).build());
        let writer = index.writer_with_num_threads(1, WRITER_BYTES)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { fields, writer: std::sync::Mutex::new(Some(writer)), reader, created })
    }

    /// Whether [`MessageIndex::open`] made a new, empty index.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Indexes the messages (replacing what the index had for each), then commits and makes them searchable.
    /// The commit is durable: tantivy syncs its segments and its meta file.
    pub fn apply(&self, messages: &[IndexedMessage]) -> SearchResult<()> {
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let writer = guard.as_mut().ok_or_else(|| SearchError::Open("the index is closed".into()))?;
        for message in messages {
            let key = key_bytes(message.conversation, message.seq);
            writer.delete_term(Term::from_field_bytes(self.fields.key, &key));
            if message.words.is_empty() {
                continue;
            }
            let mut doc = TantivyDocument::default();
            doc.add_bytes(self.fields.key, &key);
            doc.add_bytes(self.fields.conversation, &message.conversation.to_bytes());
            doc.add_text(self.fields.words, message.words.join(" "));
            doc.add_i64(self.fields.sent_at, message.sent_at);
            writer.add_document(doc)?;
        }
        writer.commit()?;
        drop(guard);
        self.reader.reload()?;
        Ok(())
    }

    /// Up to `limit` messages of `conversations` holding a word that starts with each of `terms`, best first,
    /// after skipping `offset`.
    pub fn search(
        &self,
        terms: &[String],
        conversations: &[ConversationId],
        offset: usize,
        limit: usize,
    ) -> SearchResult<Vec<(ConversationId, u64)>> {
        if terms.is_empty() || conversations.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(terms.len() + 1);
        for term in terms {
            let words = self.expand(&searcher, term)?;
            if words.is_empty() {
                return Ok(Vec::new());
            }
            let any: Vec<(Occur, Box<dyn Query>)> = words
                .into_iter()
                .map(|w| {
                    let query: Box<dyn Query> = Box::new(TermQuery::new(w, IndexRecordOption::WithFreqs));
                    (Occur::Should, query)
                })
                .collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        let allowed = conversations.iter().map(|c| Term::from_field_bytes(self.fields.conversation, &c.to_bytes()));
        clauses.push((Occur::Must, Box::new(TermSetQuery::new(allowed))));
        // Best first, and the newest first among equals (short messages often score the same).
        let ranked = TopDocs::with_limit(limit).and_offset(offset).tweak_score(|segment: &SegmentReader| {
            let sent_at = segment.fast_fields().i64(SENT_AT).ok().map(|c| c.first_or_default_col(0));
            move |doc: DocId, score: Score| (score, sent_at.as_ref().map_or(0, |c| c.get_val(doc)))
        });
        let top = searcher.search(&BooleanQuery::new(clauses), &ranked)?;
        let mut hits = Vec::with_capacity(top.len());
        for (_, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            if let Some(hit) = doc.get_first(self.fields.key).and_then(|v| v.as_bytes()).and_then(from_key) {
                hits.push(hit);
            }
        }
        Ok(hits)
    }

    /// The index's words that start with `prefix`, across every segment: the exact word first, then the others
    /// in byte order, at most [`MAX_EXPANSIONS`].
    fn expand(&self, searcher: &tantivy::Searcher, prefix: &str) -> SearchResult<Vec<Term>> {
        let mut found: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        let mut exact = false;
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(self.fields.words)?;
            let mut stream = inverted.terms().range().ge(prefix.as_bytes()).into_stream()?;
            let mut taken = 0;
            while stream.advance() && taken < MAX_EXPANSIONS {
                let key = stream.key();
                if !key.starts_with(prefix.as_bytes()) {
                    break;
                }
                exact |= key == prefix.as_bytes();
                found.insert(key.to_vec());
                taken += 1;
            }
        }
        let mut words: Vec<Vec<u8>> = Vec::with_capacity(MAX_EXPANSIONS);
        if exact {
            words.push(prefix.as_bytes().to_vec());
        }
        words.extend(found.into_iter().filter(|w| w != prefix.as_bytes()).take(MAX_EXPANSIONS - words.len()));
        Ok(words
            .into_iter()
            .filter_map(|w| String::from_utf8(w).ok())
            .map(|w| Term::from_field_text(self.fields.words, &w))
            .collect())
    }

    /// Waits for tantivy's merges and releases the directory's writer lock, so the same index can be opened
    /// again in this process. Searches still work; [`MessageIndex::apply`] fails from now on.
    pub fn close(&self) -> SearchResult<()> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            writer.wait_merging_threads()?;
        }
        Ok(())
    }
}
