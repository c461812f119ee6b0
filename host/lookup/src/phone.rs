//! Caller numbers to E.164, with libphonenumber's metadata.

use phonenumber::{Mode, country};

/// Longest number text accepted before parsing.
const MAX_PHONE_CHARS: usize = 64;

/// Why a number could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// The workspace's default region is not a CLDR region code.
    #[error("the workspace's default region {0:?} is not a region code (e.g. US, GB, DE)")]
    Region(String),
    /// The text is not a phone number.
    #[error("{number:?} is not a phone number: {reason}")]
    Unparseable {
        /// The number as given (cut to its first 64 characters).
        number: String,
        /// What the parser found wrong.
        reason: String,
    },
    /// It parses, but no such number exists in its region's plan.
    #[error("{0:?} is not a valid number in its region's numbering plan")]
    Invalid(String),
}

/// `code` as a region code libphonenumber knows (`us` is `US`), or why not.
pub fn region(code: &str) -> Result<String, PhoneError> {
    region_id(code).map(|id| id.as_ref().to_owned())
}

fn region_id(code: &str) -> Result<country::Id, PhoneError> {
    let shown: String = code.chars().take(8).collect();
    code.trim()
        .to_ascii_uppercase()
        .parse::<country::Id>()
        .map_err(|_| PhoneError::Region(shown))
}

/// `raw` in E.164 (`+15551234567`). A number without a country code is read
/// in `default_region` (a CLDR code such as `US`); without one, it must
/// start with `+`.
pub fn normalise(raw: &str, default_region: Option<&str>) -> Result<String, PhoneError> {
    let shown: String = raw.chars().take(MAX_PHONE_CHARS).collect();
    if raw.chars().count() > MAX_PHONE_CHARS {
        return Err(PhoneError::Unparseable {
            number: shown,
            reason: format!("longer than {MAX_PHONE_CHARS} characters"),
        });
    }
    let region = default_region.map(region_id).transpose()?;
    // The parser has panicked on odd input in the past (rust-phonenumber
    // issues #32, #43): a panic is an unparseable number, not a dead request.
    let parsed = std::panic::catch_unwind(|| {
        let number = phonenumber::parse(region, raw).map_err(|e| e.to_string())?;
        Ok::<_, String>(
            phonenumber::is_valid(&number).then(|| number.format().mode(Mode::E164).to_string()),
        )
    });
    match parsed {
        Ok(Ok(Some(e164))) => Ok(e164),
        Ok(Ok(None)) => Err(PhoneError::Invalid(shown)),
        Ok(Err(reason)) => Err(PhoneError::Unparseable {
            number: shown,
            reason,
        }),
        Err(_) => Err(PhoneError::Unparseable {
            number: shown,
            reason: "the number could not be read".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_any_common_form_become_e164() {
        for (raw, region, e164) in [
            ("+1 (650) 253-0000", None, "+16502530000"),
            ("(650) 253-0000", Some("US"), "+16502530000"),
            ("650.253.0000", Some("us"), "+16502530000"),
            ("020 7946 0018", Some("GB"), "+442079460018"),
            ("+44 20 7946 0018", Some("US"), "+442079460018"),
            ("030 901820", Some("DE"), "+4930901820"),
        ] {
            assert_eq!(
                normalise(raw, region).as_deref(),
                Ok(e164),
                "{raw} in {region:?}"
            );
        }
    }

    #[test]
    fn region_codes_are_checked_and_made_canonical() {
        assert_eq!(region("us").as_deref(), Ok("US"));
        assert_eq!(region(" gb ").as_deref(), Ok("GB"));
        for bad in ["XX", "", "USA", "United States", "u\u{0}"] {
            assert!(matches!(region(bad), Err(PhoneError::Region(_))), "{bad:?}");
        }
        let long = "Z".repeat(10_000);
        assert_eq!(region(&long), Err(PhoneError::Region("Z".repeat(8))));
    }

    #[test]
    fn what_is_not_a_number_is_named() {
        assert!(matches!(
            normalise("(650) 253-0000", None),
            Err(PhoneError::Unparseable { .. })
        ));
        assert!(matches!(
            normalise("call me", Some("US")),
            Err(PhoneError::Unparseable { .. })
        ));
        assert!(matches!(
            normalise("+1 555 0000", None),
            Err(PhoneError::Invalid(_))
        ));
        assert_eq!(
            normalise("+16502530000", Some("XX")),
            Err(PhoneError::Region("XX".into()))
        );
        assert!(matches!(
            normalise(&"1".repeat(65), Some("US")),
            Err(PhoneError::Unparseable { .. })
        ));
        // Odd input is an error, never a panic.
        for odd in [
            "+",
            "+1",
            "+999",
            "tel:+1-650-253-0000;ext=1",
            "１２３４５６７８９０",
            "+1 (((((",
            "0000000000000000",
            ";;;",
            "+800 1234 5678 9012",
        ] {
            let _ = normalise(odd, Some("US"));
            let _ = normalise(odd, None);
        }
    }
}
