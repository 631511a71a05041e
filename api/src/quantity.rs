//! Kubernetes resource quantities (`250m`, `1.5Gi`, `1e3`), parsed exactly.
//!
//! Requests and limits are compared and summed by the validator and the scheduler, so they are
//! held as an integer count of nano-units rather than a float: `0.1` cpu is exactly
//! 100,000,000 nano-cores, and `1Mi` exactly 1,048,576,000,000,000 nano-bytes.

use std::fmt;
use std::str::FromStr;

const NANO: i128 = 1_000_000_000;

/// A parsed quantity, in nano-units (rounded up, as Kubernetes rounds sub-milli precision up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    nanos: i128,
}

/// Why a quantity string is not a quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Does not follow `<number><suffix>`.
    #[error(
        "{0:?} is not a quantity (expected a number with an optional suffix such as 500m, 2, 128Mi, 1G)"
    )]
    Malformed(String),
    /// The number is too large to hold.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

impl Quantity {
    /// A quantity of whole units.
    pub fn from_units(units: i64) -> Self {
        Self {
            nanos: i128::from(units) * NANO,
        }
    }

    /// A quantity of thousandths (millicores for cpu).
    pub fn from_milli(milli: i64) -> Self {
        Self {
            nanos: i128::from(milli) * 1_000_000,
        }
    }

    /// The value in thousandths, rounded up (millicores for cpu).
    pub fn milli(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// The value in whole units, rounded up (bytes for memory).
    pub fn units(&self) -> i128 {
        div_ceil(self.nanos, NANO)
    }

    /// True for a value below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// A quantity as a manifest gives it: a string (`"500m"`) or a bare JSON number (`0.5`,
    /// `2`), which Kubernetes also accepts. The one reading of a JSON quantity the scheduler,
    /// the QoS class and the kubelet share, so that all three agree on `cpu: 0.5`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, QuantityError> {
        match value {
            serde_json::Value::String(text) => text.parse(),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(units) => Ok(Self::from_units(units)),
                None => n.to_string().parse(),
            },
            other => Err(QuantityError::Malformed(other.to_string())),
        }
    }

    /// The sum of two quantities, or `None` on overflow.
    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        self.nanos
            .checked_add(other.nanos)
            .map(|nanos| Quantity { nanos })
    }
}

fn div_ceil(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d > 0 { q + 1 } else { q }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || QuantityError::Malformed(text.to_string());
        let too_large = || QuantityError::TooLarge(text.to_string());
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let (number, suffix) = rest.split_at(number_len);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(malformed());
        }
        // mantissa = whole.frac as an integer, scaled by 10^-frac.len()
        let mut mantissa: i128 = 0;
        for b in whole.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(b - b'0')))
                .ok_or_else(too_large)?;
        }
        let mut exp10: i32 = -i32::try_from(frac.len()).map_err(|_| too_large())?;
        let mut binary: i128 = 1;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => binary = 1 << 10,
            "Mi" => binary = 1 << 20,
            "Gi" => binary = 1 << 30,
            "Ti" => binary = 1 << 40,
            "Pi" => binary = 1 << 50,
            "Ei" => binary = 1 << 60,
            _ => {
                let exponent = suffix
                    .strip_prefix(['e', 'E'])
                    .filter(|e| {
                        let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
                        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                    })
                    .ok_or_else(malformed)?;
                let exponent: i32 = exponent.parse().map_err(|_| too_large())?;
                exp10 = exp10.checked_add(exponent).ok_or_else(too_large)?;
            }
        }
        let value = mantissa.checked_mul(binary).ok_or_else(too_large)?;
        // to nano-units: value * 10^(exp10 + 9), rounding a remainder up.
        let shift = exp10 + 9;
        let nanos = if shift >= 0 {
            let factor = 10i128
                .checked_pow(shift.unsigned_abs())
                .ok_or_else(too_large)?;
            value.checked_mul(factor).ok_or_else(too_large)?
        } else {
            match 10i128.checked_pow(shift.unsigned_abs()) {
                Some(divisor) => div_ceil(value, divisor),
                // Smaller than a nano-unit but not zero: rounds up to one.
                None => i128::from(value > 0),
            }
        };
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
        })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos % NANO == 0 {
            write!(f, "{}", self.nanos / NANO)
        } else {
            write!(f, "{}m", self.milli())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        s.parse().expect(s)
    }

    #[test]
    fn json_numbers_and_strings_are_the_same_quantities() {
        use serde_json::json;
        let milli = |v: serde_json::Value| Quantity::from_json(&v).map(|q| q.milli());
        assert_eq!(milli(json!(0.5)), Ok(500));
        assert_eq!(milli(json!(2)), Ok(2000));
        assert_eq!(milli(json!("500m")), Ok(500));
        assert_eq!(milli(json!(1e3)), Ok(1_000_000));
        assert!(matches!(
            milli(json!(true)),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(
            milli(json!("lots")),
            Err(QuantityError::Malformed(_))
        ));
    }

    #[test]
    fn parses_every_suffix_family() {
        assert_eq!(q("250m").milli(), 250);
        assert_eq!(q("0.5").milli(), 500);
        assert_eq!(q("2").milli(), 2000);
        assert_eq!(q("1Ki").units(), 1024);
        assert_eq!(q("1.5Gi").units(), 1_610_612_736);
        assert_eq!(q("128Mi").units(), 134_217_728);
        assert_eq!(q("1G").units(), 1_000_000_000);
        assert_eq!(q("1e3").units(), 1000);
        assert_eq!(q("1E3").units(), 1000);
        assert_eq!(q("1E").units(), 1_000_000_000_000_000_000);
        assert_eq!(q("-1").units(), -1);
        assert_eq!(q(".5").milli(), 500);
        assert_eq!(q("5.").units(), 5);
        // Sub-milli precision rounds up, as Kubernetes does.
        assert_eq!(q("0.1m").milli(), 1);
        assert_eq!(q("1n").milli(), 1);
    }

    #[test]
    fn rejects_malformed_quantities() {
        for bad in [
            "1x", "", "m", "1.2.3", "1e", "1Kib", "--1", "1 Gi", "abc", "1e+",
        ] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad} should be rejected");
        }
        assert!(matches!(
            "99999999999999999999999999999999999999999Ei".parse::<Quantity>(),
            Err(QuantityError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = s.parse::<Quantity>();
        }

        #[test]
        fn millis_round_trip(milli in -1_000_000_000i64..1_000_000_000) {
            let text = format!("{milli}m");
            prop_assert_eq!(q(&text).milli(), i128::from(milli));
            prop_assert_eq!(q(&Quantity::from_milli(milli).to_string()), Quantity::from_milli(milli));
        }
    }
}
