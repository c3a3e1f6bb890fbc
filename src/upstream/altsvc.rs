//! Reading the `Alt-Svc` header (RFC 7838) for the one thing the link wants from it: whether the
//! upstream offers HTTP/3 on this same host, on which UDP port, and for how long. Sans-IO.

use std::time::Duration;

/// What one `Alt-Svc` field value says about HTTP/3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alternative {
    /// `h3` on this host at `port`, valid for `max_age`.
    H3 { port: u16, max_age: Duration },
    /// `clear`: forget every alternative.
    Clear,
    /// Nothing usable (other protocols, other hosts, malformed).
    None,
}

/// RFC 7838 §3.1: `ma` defaults to 24 hours.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(86_400);

/// Alternatives on another host are ignored: the certificate is checked against the upstream's
/// own name either way, and following a redirect to a third host is more than a branch needs.
pub(crate) fn h3_alternative(value: &str) -> Alternative {
    if value.trim() == "clear" {
        return Alternative::Clear;
    }
    for entry in split_outside_quotes(value, ',') {
        let mut params = split_outside_quotes(entry, ';').into_iter();
        let Some((protocol, authority)) = params.next().and_then(|a| a.split_once('=')) else {
            continue;
        };
        if protocol.trim() != "h3" {
            continue;
        }
        let authority = authority.trim();
        let Some(authority) = authority
            .strip_prefix('"')
            .and_then(|a| a.strip_suffix('"'))
        else {
            continue;
        };
        let Some((host, port)) = authority.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        if !host.is_empty() || port == 0 {
            continue;
        }
        let mut max_age = DEFAULT_MAX_AGE;
        for param in params {
            if let Some((name, v)) = param.split_once('=')
                && name.trim().eq_ignore_ascii_case("ma")
                && let Ok(secs) = v.trim().trim_matches('"').parse::<u64>()
            {
                max_age = Duration::from_secs(secs);
            }
        }
        return Alternative::H3 { port, max_age };
    }
    Alternative::None
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let h3 = |port, secs| Alternative::H3 {
            port,
            max_age: Duration::from_secs(secs),
        };
        assert_eq!(h3_alternative("h3=\":8531\""), h3(8531, 86_400));
        assert_eq!(h3_alternative("h3=\":443\"; ma=3600"), h3(443, 3600));
        assert_eq!(
            h3_alternative("h3-29=\":1\", h3=\":2\";ma=60;persist=1"),
            h3(2, 60)
        );
        assert_eq!(h3_alternative(" clear "), Alternative::Clear);
        assert_eq!(h3_alternative("h2=\":443\""), Alternative::None);
        assert_eq!(
            h3_alternative("h3=\"other.example:443\""),
            Alternative::None
        );
        assert_eq!(h3_alternative("h3=\":99999\""), Alternative::None);
        assert_eq!(h3_alternative("h3=:443"), Alternative::None);
        assert_eq!(h3_alternative("h3=\":44\\\"3\""), Alternative::None);
        assert_eq!(h3_alternative(""), Alternative::None);
    }
}
