//! The fault shape of the WSUS web services, shared by both protocols (MS-WUSP §2.2.2.4,
//! MS-WSUSSS): an ErrorCode, a Message, an ID and the Method in the SOAP fault's detail, sent
//! with HTTP 500 as ASP.NET web services send them; and the HTTP answer ([`Reply`]) a call gets.
//! Sans-IO.

use super::xsd::Guid;
use super::{FaultCode, Version};

/// The protocol's fault codes (MS-WUSP §2.2.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidCookie,
    ConfigChanged,
    RegistrationRequired,
    ServerChanged,
    InternalServerError,
    CookieExpired,
    InvalidParameters,
    InvalidAuthorizationCookie,
    RegistrationNotRequired,
    ServerBusy,
    FileLocationChanged,
    /// MS-WSUSSS only.
    IncompatibleProtocolVersion,
    /// MS-WSUSSS DownloadFiles: digests the upstream does not know.
    FileDigestsMissing,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidCookie,
        ErrorCode::ConfigChanged,
        ErrorCode::RegistrationRequired,
        ErrorCode::ServerChanged,
        ErrorCode::InternalServerError,
        ErrorCode::CookieExpired,
        ErrorCode::InvalidParameters,
        ErrorCode::InvalidAuthorizationCookie,
        ErrorCode::RegistrationNotRequired,
        ErrorCode::ServerBusy,
        ErrorCode::FileLocationChanged,
        ErrorCode::IncompatibleProtocolVersion,
        ErrorCode::FileDigestsMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidCookie => "InvalidCookie",
            ErrorCode::ConfigChanged => "ConfigChanged",
            ErrorCode::RegistrationRequired => "RegistrationRequired",
            ErrorCode::ServerChanged => "ServerChanged",
            ErrorCode::InternalServerError => "InternalServerError",
            ErrorCode::CookieExpired => "CookieExpired",
            ErrorCode::InvalidParameters => "InvalidParameters",
            ErrorCode::InvalidAuthorizationCookie => "InvalidAuthorizationCookie",
            ErrorCode::RegistrationNotRequired => "RegistrationNotRequired",
            ErrorCode::ServerBusy => "ServerBusy",
            ErrorCode::FileLocationChanged => "FileLocationChanged",
            ErrorCode::IncompatibleProtocolVersion => "IncompatibleProtocolVersion",
            ErrorCode::FileDigestsMissing => "FileDigestsMissing",
        }
    }

    /// A fault's ErrorCode as an upstream sent it (case-sensitive, as the protocol says).
    pub fn parse(text: &str) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == text.trim())
    }
}

/// A protocol fault: its code and a message (for InvalidParameters, the parameter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: ErrorCode,
    pub message: String,
}

impl Fault {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Fault {
        Fault {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(parameter: impl Into<String>) -> Fault {
        Fault::new(ErrorCode::InvalidParameters, parameter)
    }

    pub fn internal(e: impl std::fmt::Display) -> Fault {
        Fault::new(ErrorCode::InternalServerError, e.to_string())
    }
}

/// The HTTP answer to a call: a SOAP envelope or a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// The operation answered (or faulted), for logs and metrics.
    pub operation: String,
    pub fault: Option<ErrorCode>,
}

/// A fault answer as the WSUS web services send it: HTTP 500, ErrorCode, Message, ID and
/// Method (the SOAPAction of `operation` in `ns`) in the detail.
pub fn fault_in(version: Version, ns: &str, operation: &str, fault: &Fault) -> Reply {
    let mut detail = String::new();
    super::text_element(&mut detail, "ErrorCode", fault.code.as_str());
    super::text_element(&mut detail, "Message", &fault.message);
    super::text_element(&mut detail, "ID", &Guid::random().to_string());
    super::text_element(&mut detail, "Method", &format!("\"{ns}/{operation}\""));
    let code = match fault.code {
        ErrorCode::InternalServerError | ErrorCode::ServerBusy => FaultCode::Server,
        _ => FaultCode::Client,
    };
    Reply {
        status: 500,
        content_type: version.content_type(),
        body: super::fault(version, code, "Fault occurred", Some(&detail)),
        operation: operation.to_owned(),
        fault: Some(fault.code),
    }
}
