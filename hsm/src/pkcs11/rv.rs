//! PKCS#11 return values: which mean "the session or token is gone, re-open", and which become
//! which [`Error`].

use cryptoki::error::{Error as CkError, RvError};

use crate::Error;

/// Whether a failure means the session, the login or the library state is gone, so that
/// re-opening the sessions and logging in again may cure it.
pub(crate) fn is_lost(error: &CkError) -> bool {
    let CkError::Pkcs11(rv, _) = error else {
        return false;
    };
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::UserNotLoggedIn
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::SlotIdInvalid
            | RvError::CryptokiNotInitialized
    )
}

/// Maps a failed call on token `token` to this crate's error. Login failures get their own
/// variants; everything else becomes [`Error::Pkcs11`] naming the return value.
pub(crate) fn to_error(error: &CkError, token: &str, operation: &'static str) -> Error {
    let token = token.to_owned();
    match error {
        CkError::Pkcs11(RvError::PinIncorrect, _) => Error::WrongPin { token },
        CkError::Pkcs11(RvError::PinLocked, _) => Error::TokenLocked { token },
        other => Error::Pkcs11 {
            token,
            operation,
            reason: describe(other),
        },
    }
}

/// A short description of a cryptoki error: the `CKR_` name and the function for return values
/// (cryptoki's own text for them is a paragraph of the specification).
pub(crate) fn describe(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, function) => format!("{} from C_{function:?}", ckr_name(*rv)),
        other => other.to_string(),
    }
}

/// The specification's name of a return value: `PinIncorrect` becomes `CKR_PIN_INCORRECT`.
pub(crate) fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    if !camel.bytes().all(|b| b.is_ascii_alphanumeric()) {
        // Vendor-defined and unknown values carry their number: keep cryptoki's form.
        return camel;
    }
    let mut name = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;

    use super::*;

    fn rv(rv: RvError) -> CkError {
        CkError::Pkcs11(rv, Function::Sign)
    }

    #[test]
    fn return_values_map_to_errors() {
        assert!(
            matches!(to_error(&rv(RvError::PinIncorrect), "t", "log in"), Error::WrongPin { token } if token == "t")
        );
        assert!(
            matches!(to_error(&rv(RvError::PinLocked), "t", "log in"), Error::TokenLocked { token } if token == "t")
        );
        let Error::Pkcs11 {
            token,
            operation,
            reason,
        } = to_error(&rv(RvError::DataLenRange), "t", "sign")
        else {
            panic!("expected Error::Pkcs11");
        };
        assert_eq!((token.as_str(), operation), ("t", "sign"));
        assert_eq!(reason, "CKR_DATA_LEN_RANGE from C_Sign");
        let message = to_error(&rv(RvError::MechanismInvalid), "gw-signing", "sign").to_string();
        assert!(
            message.contains("gw-signing") && message.contains("CKR_MECHANISM_INVALID"),
            "{message}"
        );
    }

    #[test]
    fn lost_sessions_are_told_apart() {
        for lost in [
            RvError::SessionHandleInvalid,
            RvError::SessionClosed,
            RvError::DeviceRemoved,
            RvError::DeviceError,
            RvError::TokenNotPresent,
            RvError::UserNotLoggedIn,
            RvError::KeyHandleInvalid,
            RvError::CryptokiNotInitialized,
        ] {
            assert!(is_lost(&rv(lost)), "{lost:?}");
        }
        for kept in [
            RvError::PinIncorrect,
            RvError::PinLocked,
            RvError::DataLenRange,
            RvError::MechanismInvalid,
        ] {
            assert!(!is_lost(&rv(kept)), "{kept:?}");
        }
        assert!(!is_lost(&CkError::NotSupported));
    }

    #[test]
    fn ckr_names() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::CryptokiAlreadyInitialized),
            "CKR_CRYPTOKI_ALREADY_INITIALIZED"
        );
        assert_eq!(ckr_name(RvError::UserNotLoggedIn), "CKR_USER_NOT_LOGGED_IN");
    }
}
