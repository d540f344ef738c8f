//! The genesis file: the first authorities and the chain's parameters, in TOML.
//!
//! ```toml
//! # lifeline chain genesis
//! timestamp = "2026-11-21T16:00:00Z"
//! authorities = ["12D3KooW...", "12D3KooW..."]
//! epoch = 30000
//! period_secs = 5
//! heartbeat_secs = 60
//! max_clock_skew_secs = 15
//! snapshot_interval = 1024
//! registrations_per_block = 64
//! registrations_per_window = 4096
//! registration_window_blocks = 720
//! ```
//!
//! Every node of one network must use the same file: the genesis hash commits
//! to all of it.

use std::time::{Duration, SystemTime};

use lifeline_crypto::{NodeId, Timestamp};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::alert::DEFAULT_ALERT_LIFETIME;
use crate::block::MAX_SIGNERS;
use crate::chain::{ChainConfig, Genesis};
use crate::state::RegistrationLimits;

/// Largest genesis file read.
pub const MAX_GENESIS_FILE: usize = 256 * 1024;

/// The genesis file's contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// Genesis time, RFC 3339 (`2026-11-21T16:00:00Z`).
    pub timestamp: String,
    /// The first authorities' ids.
    pub authorities: Vec<String>,
    /// Blocks between checkpoints.
    #[serde(default = "default_epoch")]
    pub epoch: u64,
    /// Least seconds between blocks.
    #[serde(default = "default_period")]
    pub period_secs: u64,
    /// Most seconds without a block.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// How far block times may run ahead of a node's clock, in seconds.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
    /// Blocks between state snapshots.
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: u64,
    /// Most new identities one block may register. The three registration
    /// fields are written by `lifeline chain genesis`; a file with none of
    /// them is from before the limits, and its chain has none (a missing
    /// one of the three takes its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrations_per_block: Option<u32>,
    /// Most new identities one window of blocks may register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrations_per_window: Option<u32>,
    /// Blocks per registration window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_window_blocks: Option<u64>,
    /// Hours an alert without `<expires>` stays in force (until an Update or
    /// Cancel replaces it first). Written by `lifeline chain genesis`; a
    /// file without it is from before it, and its alerts last 72 hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_lifetime_hours: Option<u64>,
}

fn default_epoch() -> u64 {
    ChainConfig::default().epoch
}
fn default_period() -> u64 {
    ChainConfig::default().period.as_secs()
}
fn default_heartbeat() -> u64 {
    ChainConfig::default().heartbeat.as_secs()
}
fn default_skew() -> u64 {
    ChainConfig::default().max_clock_skew.as_secs()
}
fn default_snapshot_interval() -> u64 {
    ChainConfig::default().snapshot_interval
}

/// Why a genesis file is not usable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GenesisError {
    /// Not valid TOML, or a field is wrong (the message names the line).
    #[error("{0}")]
    Syntax(String),
    /// The timestamp is not RFC 3339.
    #[error("timestamp {0:?} is not an RFC 3339 time such as 2026-11-21T16:00:00Z")]
    Timestamp(String),
    /// An authority id is invalid.
    #[error("authority {id:?}: {reason}")]
    Authority {
        /// The id as written.
        id: String,
        /// Why.
        reason: String,
    },
    /// A parameter is out of range.
    #[error("{0}")]
    Parameter(&'static str),
}

impl GenesisFile {
    /// A file for `authorities`, at `timestamp`, with default parameters.
    pub fn new(authorities: &[NodeId], timestamp: SystemTime) -> Self {
        Self {
            timestamp: format_rfc3339(timestamp),
            authorities: authorities.iter().map(ToString::to_string).collect(),
            epoch: default_epoch(),
            period_secs: default_period(),
            heartbeat_secs: default_heartbeat(),
            max_clock_skew_secs: default_skew(),
            snapshot_interval: default_snapshot_interval(),
            registrations_per_block: Some(RegistrationLimits::default().per_block),
            registrations_per_window: Some(RegistrationLimits::default().per_window),
            registration_window_blocks: Some(RegistrationLimits::default().window_blocks),
            alert_lifetime_hours: Some(DEFAULT_ALERT_LIFETIME.as_secs() / 3600),
        }
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, GenesisError> {
        if text.len() > MAX_GENESIS_FILE {
            return Err(GenesisError::Parameter(
                "the genesis file is larger than 256 KiB",
            ));
        }
        toml::from_str(text).map_err(|e| GenesisError::Syntax(e.to_string()))
    }

    /// The TOML text, with a header comment.
    pub fn to_toml(&self) -> Result<String, GenesisError> {
        let body = toml::to_string(self).map_err(|e| GenesisError::Syntax(e.to_string()))?;
        Ok(format!(
            "# lifeline chain genesis: every node of this network must use exactly this file.\n{body}"
        ))
    }

    /// Checks everything and builds the chain's genesis.
    pub fn to_genesis(&self) -> Result<Genesis, GenesisError> {
        let timestamp = parse_rfc3339(&self.timestamp)?;
        if self.authorities.is_empty() || self.authorities.len() > MAX_SIGNERS {
            return Err(GenesisError::Parameter(
                "a genesis lists 1 to 256 authorities",
            ));
        }
        let mut signers = Vec::with_capacity(self.authorities.len());
        for id in &self.authorities {
            let parsed: NodeId = id.parse().map_err(|e: lifeline_crypto::IdentityError| {
                GenesisError::Authority {
                    id: id.clone(),
                    reason: e.to_string(),
                }
            })?;
            if signers.contains(&parsed) {
                return Err(GenesisError::Authority {
                    id: id.clone(),
                    reason: "listed twice".into(),
                });
            }
            signers.push(parsed);
        }
        if self.epoch == 0 || self.snapshot_interval == 0 {
            return Err(GenesisError::Parameter(
                "epoch and snapshot_interval must be at least 1",
            ));
        }
        if self.period_secs == 0 || self.heartbeat_secs < self.period_secs {
            return Err(GenesisError::Parameter(
                "period_secs must be at least 1 and heartbeat_secs at least period_secs",
            ));
        }
        if self
            .alert_lifetime_hours
            .is_some_and(|h| h == 0 || h > 24 * 366)
        {
            return Err(GenesisError::Parameter(
                "alert_lifetime_hours must be 1 to 8784 (a year)",
            ));
        }
        let registrations = self.registration_limits();
        if registrations
            .is_some_and(|r| r.per_block == 0 || r.per_window < r.per_block || r.window_blocks == 0)
        {
            return Err(GenesisError::Parameter(
                "registrations_per_block and registration_window_blocks must be at least 1, \
                 and registrations_per_window at least registrations_per_block",
            ));
        }
        Ok(Genesis {
            config: ChainConfig {
                epoch: self.epoch,
                period: Duration::from_secs(self.period_secs),
                heartbeat: Duration::from_secs(self.heartbeat_secs),
                max_clock_skew: Duration::from_secs(self.max_clock_skew_secs),
                snapshot_interval: self.snapshot_interval,
                registrations,
                alert_lifetime: self
                    .alert_lifetime_hours
                    .map(|h| Duration::from_secs(h * 3600)),
            },
            timestamp,
            signers,
        })
    }
}

impl GenesisFile {
    /// The registration limits the file sets: none if it names none of
    /// the three fields (a file from before the limits), else each one it
    /// names and the defaults for the others.
    fn registration_limits(&self) -> Option<RegistrationLimits> {
        let d = RegistrationLimits::default();
        (self.registrations_per_block.is_some()
            || self.registrations_per_window.is_some()
            || self.registration_window_blocks.is_some())
        .then(|| RegistrationLimits {
            per_block: self.registrations_per_block.unwrap_or(d.per_block),
            per_window: self.registrations_per_window.unwrap_or(d.per_window),
            window_blocks: self.registration_window_blocks.unwrap_or(d.window_blocks),
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a system time (UTC).
fn format_rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only, as genesis files use).
fn parse_rfc3339(text: &str) -> Result<Timestamp, GenesisError> {
    let bad = || GenesisError::Timestamp(text.to_string());
    let t = text.trim().strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = t.split_once('T').ok_or_else(bad)?;
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let (time, millis) = match time.split_once('.') {
        Some((hms, frac)) => (hms, {
            let frac = &frac[..frac.len().min(3)];
            num(frac)? * 10u32.pow(3 - u32::try_from(frac.len()).unwrap_or(3))
        }),
        None => (time, 0),
    };
    let h: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || h.len() != 3 {
        return Err(bad());
    }
    let (year, month, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hour, minute, second) = (num(h[0])?, num(h[1])?, num(h[2])?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let millis = u64::try_from(secs).map_err(|_| bad())? * 1000 + u64::from(millis);
    Ok(Timestamp::from_unix_millis(millis))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::identity_of;

    #[test]
    fn a_made_file_round_trips_to_the_same_genesis() {
        let ids: Vec<NodeId> = ["A", "B"]
            .iter()
            .map(|n| *identity_of(n).unwrap().id())
            .collect();
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_763_740_800);
        let file = GenesisFile::new(&ids, time);
        assert_eq!(file.timestamp, "2025-11-21T16:00:00Z");
        let text = file.to_toml().unwrap();
        let parsed = GenesisFile::from_toml(&text).unwrap();
        assert_eq!(parsed, file);
        let genesis = parsed.to_genesis().unwrap();
        assert_eq!(genesis.signers, ids);
        assert_eq!(genesis.timestamp.as_unix_millis(), 1_763_740_800_000);
        assert_eq!(genesis.config, ChainConfig::default());
    }

    #[test]
    fn a_file_from_before_the_alert_lifetime_keeps_its_hash() {
        let ids = [*identity_of("A").unwrap().id()];
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_763_740_800);
        let mut old = GenesisFile::new(&ids, time);
        old.alert_lifetime_hours = None;
        let old = old.to_genesis().unwrap();
        assert_eq!(old.config.alert_lifetime, None);
        assert_eq!(old.config.alert_lifetime(), DEFAULT_ALERT_LIFETIME);
        // The hash this file had before the field existed (computed by the
        // code of 60dc04c).
        assert_eq!(
            old.hash().to_string(),
            "40197b827b98353af9df3bd809bca7580d4d6665b00184f3146564c83c282fa4"
        );
        let new = GenesisFile::new(&ids, time).to_genesis().unwrap();
        assert_ne!(new.hash(), old.hash(), "the hash commits to a set lifetime");
        let mut zero = GenesisFile::new(&ids, time);
        zero.alert_lifetime_hours = Some(0);
        assert!(zero.to_genesis().is_err());
    }

    #[test]
    fn dates_convert_both_ways() {
        for days in [-1, 0, 59, 60, 365, 10_956, 19_000, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:01.5Z")
                .unwrap()
                .as_unix_millis(),
            1_500
        );
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z")
                .unwrap()
                .as_unix_millis(),
            951_868_800_000
        );
        assert!(parse_rfc3339("2000-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339("2000-01-01 00:00:00").is_err());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let id = identity_of("A").unwrap().id().to_string();
        let bad = |text: &str| {
            GenesisFile::from_toml(text)
                .and_then(|f| f.to_genesis())
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad("timestamp = 5").contains("line 1"),
            "{}",
            bad("timestamp = 5")
        );
        assert!(
            bad(&format!(
                "timestamp = \"2026-11-21T16:00:00Z\"\nauthorities = [\"{id}\"]\nepochs = 3"
            ))
            .contains("epochs")
        );
        assert!(bad("timestamp = \"yesterday\"\nauthorities = []").contains("RFC 3339"));
        assert!(bad("timestamp = \"2026-11-21T16:00:00Z\"\nauthorities = []").contains("1 to 256"));
        assert!(
            bad("timestamp = \"2026-11-21T16:00:00Z\"\nauthorities = [\"nope\"]")
                .contains("\"nope\"")
        );
        assert!(
            bad(&format!(
                "timestamp = \"2026-11-21T16:00:00Z\"\nauthorities = [\"{id}\", \"{id}\"]"
            ))
            .contains("twice")
        );
        assert!(
            bad(&format!(
                "timestamp = \"2026-11-21T16:00:00Z\"\nauthorities = [\"{id}\"]\nperiod_secs = 0"
            ))
            .contains("period_secs")
        );
    }
}
