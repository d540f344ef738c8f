//! Who may use the web app: pairing codes, and the browser sessions they
//! open.
//!
//! A pairing code is 60 random bits written as `XXXX-XXXX-XXXX` in
//! Crockford's base32, shown by `lifeline web pair` (or printed at start),
//! used once and only within its lifetime. Pairing gives the browser a
//! session: a random 256-bit cookie, kept here only as its hash, and a CSRF
//! token that every action must echo in a header. Sessions survive a restart
//! (in `web-sessions.json` in the data folder, owner-only), so a paired
//! phone stays paired; there are at most [`MAX_SESSIONS`], the one used
//! least recently going first.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Sessions kept; a new one past this ends the least recently used.
pub const MAX_SESSIONS: usize = 256;
/// Pairing codes valid at once; a new one past this ends the oldest.
pub const MAX_CODES: usize = 8;
/// How long a code from `lifeline web pair` stays valid.
pub const CODE_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long the code printed at start stays valid.
pub const START_CODE_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Wrong codes accepted per minute, from everyone together; past this,
/// pairing waits (60 bits at 10 a minute: no guessing).
pub const MAX_FAILURES_PER_MINUTE: usize = 10;
/// A session unused this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(90 * 24 * 3600);

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why pairing failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PairError {
    /// The code is not one the node gave, or it was used or expired.
    #[error(
        "that pairing code is wrong, used or expired: ask the node's operator for a new one \
         (`lifeline web pair` on the node)"
    )]
    WrongCode,
    /// Too many wrong codes lately.
    #[error("too many wrong pairing codes in the last minute: wait a minute, then try again")]
    TooManyFailures,
}

/// A browser session.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Session {
    /// The hash of the session cookie (hex).
    hash: String,
    /// The token each action echoes (`x-lifeline-csrf`).
    csrf: String,
    /// Unix seconds.
    created: u64,
    /// Unix seconds.
    used: u64,
}

#[derive(Default)]
struct State {
    codes: VecDeque<(blake3::Hash, Instant)>,
    sessions: HashMap<String, Session>,
    failures: VecDeque<Instant>,
}

/// Pairing codes and sessions, shared by the web server and the control API.
pub struct Pairing {
    state: Mutex<State>,
    /// Where sessions are kept (None: in memory only).
    file: Option<PathBuf>,
}

/// A session that pairing (or, on loopback, opening the app) created.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie's value.
    pub cookie: String,
    /// The CSRF token.
    pub csrf: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A code's canonical form: letters upper case, no separators, and the
/// letters base32 readers confuse read as the digits they look like.
fn normalise(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\t'))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

impl Pairing {
    /// Sessions kept in `file` (read now if it exists), or in memory only.
    pub fn new(file: Option<PathBuf>) -> Self {
        let mut state = State::default();
        if let Some(path) = &file
            && let Ok(text) = std::fs::read_to_string(path)
        {
            match serde_json::from_str::<Vec<Session>>(&text) {
                Ok(sessions) => {
                    let idle = unix_now().saturating_sub(SESSION_IDLE.as_secs());
                    for s in sessions
                        .into_iter()
                        .filter(|s| s.used >= idle)
                        .take(MAX_SESSIONS)
                    {
                        state.sessions.insert(s.hash.clone(), s);
                    }
                }
                Err(e) => tracing::warn!(
                    "{} cannot be read ({e}); paired browsers must pair again",
                    path.display()
                ),
            }
        }
        Self {
            state: Mutex::new(state),
            file,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new single-use code, valid for `lifetime`.
    pub fn new_code(&self, lifetime: Duration) -> String {
        let bits: u64 = rand::random::<u64>() >> 4;
        let raw: String = (0..12)
            .map(|i| char::from(ALPHABET[((bits >> (55 - 5 * i)) & 31) as usize]))
            .collect();
        let mut state = self.lock();
        if state.codes.len() >= MAX_CODES {
            state.codes.pop_front();
        }
        state
            .codes
            .push_back((blake3::hash(raw.as_bytes()), Instant::now() + lifetime));
        format!("{}-{}-{}", &raw[..4], &raw[4..8], &raw[8..])
    }

    /// Spends `code` for a new session.
    pub fn pair(&self, code: &str) -> Result<NewSession, PairError> {
        let now = Instant::now();
        let session = {
            let mut state = self.lock();
            while state
                .failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                state.failures.pop_front();
            }
            if state.failures.len() >= MAX_FAILURES_PER_MINUTE {
                return Err(PairError::TooManyFailures);
            }
            state.codes.retain(|(_, until)| *until > now);
            let shown = blake3::hash(normalise(code).as_bytes());
            // blake3::Hash compares in constant time.
            let Some(i) = state.codes.iter().position(|(h, _)| *h == shown) else {
                state.failures.push_back(now);
                return Err(PairError::WrongCode);
            };
            state.codes.remove(i);
            Self::open(&mut state)
        };
        self.save();
        Ok(session)
    }

    /// A session without a code: for the app on loopback, where whoever can
    /// reach it already runs on this machine.
    pub fn open_unpaired(&self) -> NewSession {
        let session = Self::open(&mut self.lock());
        self.save();
        session
    }

    fn open(state: &mut State) -> NewSession {
        let cookie = hex(&rand::random::<[u8; 32]>());
        let csrf = hex(&rand::random::<[u8; 16]>());
        if state.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = state
                .sessions
                .values()
                .min_by_key(|s| s.used)
                .map(|s| s.hash.clone())
        {
            state.sessions.remove(&oldest);
        }
        let hash = blake3::hash(cookie.as_bytes()).to_hex().to_string();
        let now = unix_now();
        state.sessions.insert(
            hash.clone(),
            Session {
                hash,
                csrf: csrf.clone(),
                created: now,
                used: now,
            },
        );
        NewSession { cookie, csrf }
    }

    /// The CSRF token of the session whose cookie is `cookie`, if it is one.
    pub fn session(&self, cookie: &str) -> Option<String> {
        // Looked up by hash: the map never holds a cookie, and a lookup
        // reveals nothing of the ones it holds through timing.
        let hash = blake3::hash(cookie.as_bytes()).to_hex().to_string();
        let mut state = self.lock();
        let session = state.sessions.get_mut(&hash)?;
        let now = unix_now();
        if now.saturating_sub(session.used) > SESSION_IDLE.as_secs() {
            state.sessions.remove(&hash);
            return None;
        }
        session.used = now;
        Some(session.csrf.clone())
    }

    /// Ends the session whose cookie is `cookie`.
    pub fn close(&self, cookie: &str) {
        let hash = blake3::hash(cookie.as_bytes()).to_hex().to_string();
        let removed = self.lock().sessions.remove(&hash).is_some();
        if removed {
            self.save();
        }
    }

    /// Ends every session (`lifeline web pair --forget`): each browser must
    /// pair again. Returns how many there were.
    pub fn forget_all(&self) -> usize {
        let n = {
            let mut state = self.lock();
            let n = state.sessions.len();
            state.sessions.clear();
            n
        };
        self.save();
        n
    }

    /// Sessions open.
    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Writes the sessions to their file (owner-only, replaced whole).
    fn save(&self) {
        let Some(path) = &self.file else { return };
        let sessions: Vec<Session> = self.lock().sessions.values().cloned().collect();
        let result = serde_json::to_vec(&sessions)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = path.with_extension("json.tmp");
                let mut options = std::fs::OpenOptions::new();
                std::os::unix::fs::OpenOptionsExt::mode(
                    options.write(true).create(true).truncate(true),
                    0o600,
                );
                let mut file = options.open(&tmp)?;
                std::io::Write::write_all(&mut file, &bytes)?;
                file.sync_all()?;
                std::fs::rename(&tmp, path)
            });
        if let Err(e) = result {
            tracing::warn!(
                "cannot save the web sessions to {} ({e}); paired browsers must pair again after a restart",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_pairs_once() {
        let p = Pairing::new(None);
        let code = p.new_code(CODE_LIFETIME);
        assert_eq!(code.len(), 14);
        let s = p.pair(&code.to_lowercase().replace('-', " ")).unwrap();
        assert_eq!(p.session(&s.cookie), Some(s.csrf.clone()));
        assert_eq!(p.pair(&code).unwrap_err(), PairError::WrongCode);
        assert_eq!(p.session("not a cookie"), None);
        p.close(&s.cookie);
        assert_eq!(p.session(&s.cookie), None);
    }

    #[test]
    fn an_expired_code_does_not_pair() {
        let p = Pairing::new(None);
        let code = p.new_code(Duration::ZERO);
        assert_eq!(p.pair(&code).unwrap_err(), PairError::WrongCode);
    }

    #[test]
    fn guessing_stops_after_ten_wrong_codes_a_minute() {
        let p = Pairing::new(None);
        let code = p.new_code(CODE_LIFETIME);
        for _ in 0..MAX_FAILURES_PER_MINUTE {
            assert_eq!(p.pair("0000-0000-0000").unwrap_err(), PairError::WrongCode);
        }
        // Even the right code waits: a guesser cannot tell it found one.
        assert_eq!(p.pair(&code).unwrap_err(), PairError::TooManyFailures);
    }

    #[test]
    fn sessions_are_bounded_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("web-sessions.json");
        let p = Pairing::new(Some(file.clone()));
        p.open_unpaired();
        for _ in 0..MAX_SESSIONS + 5 {
            p.open_unpaired();
        }
        assert_eq!(p.sessions(), MAX_SESSIONS);
        let last = p.open_unpaired();
        let again = Pairing::new(Some(file.clone()));
        assert_eq!(again.sessions(), MAX_SESSIONS);
        assert_eq!(again.session(&last.cookie), Some(last.csrf));
        // The file holds hashes, never a cookie.
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(&last.cookie));
        assert_eq!(again.forget_all(), MAX_SESSIONS);
        assert_eq!(Pairing::new(Some(file)).sessions(), 0);
    }
}
