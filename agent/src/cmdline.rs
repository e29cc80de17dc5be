//! What the appliance tells the agent through the kernel command line: where it is
//! (`provisioner.url`), which interface the node booted from (`provisioner.mac`) and the
//! token that proves this boot (`provisioner.token`).

pub use provisioner_protocol::{BadMac, MacAddr};

/// The `provisioner.*` parameters of one boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootParams {
    /// The appliance's base URL, without a trailing `/`.
    pub url: String,
    pub mac: MacAddr,
    pub token: String,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CmdlineError {
    #[error("no {0}= on the kernel command line")]
    Missing(&'static str),
    #[error("provisioner.url={0:?} is not an http:// URL")]
    BadUrl(String),
    #[error("provisioner.mac: {0}")]
    BadMac(#[from] BadMac),
}

pub const URL: &str = "provisioner.url";
pub const MAC: &str = "provisioner.mac";
pub const TOKEN: &str = "provisioner.token";

impl BootParams {
    /// Reads the parameters from the text of `/proc/cmdline`. The last occurrence of a
    /// parameter wins, as the kernel does for its own: an operator's appended value
    /// overrides the default before it.
    pub fn parse(cmdline: &str) -> Result<BootParams, CmdlineError> {
        let (mut url, mut mac, mut token) = (None, None, None);
        for word in words(cmdline) {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                URL => url = Some(value.to_string()),
                MAC => mac = Some(value.to_string()),
                TOKEN => token = Some(value.to_string()),
                _ => {}
            }
        }
        let url = url.ok_or(CmdlineError::Missing(URL))?;
        // The appliance speaks plain HTTP on the provisioning network; the agent has no TLS.
        if !url.starts_with("http://") || url.len() == "http://".len() {
            return Err(CmdlineError::BadUrl(url));
        }
        Ok(BootParams {
            url: url.trim_end_matches('/').to_string(),
            mac: mac.ok_or(CmdlineError::Missing(MAC))?.parse()?,
            token: token.ok_or(CmdlineError::Missing(TOKEN))?,
        })
    }
}

/// The words of a kernel command line: separated by spaces, where double quotes keep
/// spaces inside a word and are removed (`key="a b"` is `key=a b`), as the kernel's own
/// parser does.
fn words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMDLINE: &str = "initrd=initrd console=ttyS0 provisioner.url=http://10.99.0.1:8080/ \
        provisioner.mac=52:54:00:12:34:56 provisioner.token=tok-123 quiet\n";

    #[test]
    fn parameters_from_a_real_looking_command_line() {
        let params = BootParams::parse(CMDLINE).unwrap();
        assert_eq!(params.url, "http://10.99.0.1:8080");
        assert_eq!(params.mac.to_string(), "52:54:00:12:34:56");
        assert_eq!(params.token, "tok-123");
    }

    #[test]
    fn mac_is_normalized_to_lower_case_colons() {
        let cmdline =
            "provisioner.url=http://a provisioner.mac=52-54-00-AB-CD-EF provisioner.token=t";
        let params = BootParams::parse(cmdline).unwrap();
        assert_eq!(params.mac.to_string(), "52:54:00:ab:cd:ef");
    }

    #[test]
    fn quotes_keep_spaces_and_the_last_value_wins() {
        let cmdline = "provisioner.url=http://a provisioner.url=\"http://b:80\" \
            provisioner.mac=52:54:00:12:34:56 provisioner.token=\"x y\"";
        let params = BootParams::parse(cmdline).unwrap();
        assert_eq!(params.url, "http://b:80");
        assert_eq!(params.token, "x y");
    }

    #[test]
    fn missing_and_malformed_parameters_are_named() {
        assert_eq!(
            BootParams::parse("quiet provisioner.mac=52:54:00:12:34:56"),
            Err(CmdlineError::Missing(URL))
        );
        assert_eq!(
            BootParams::parse("provisioner.url=http://a provisioner.mac=52:54:00:12:34:56"),
            Err(CmdlineError::Missing(TOKEN))
        );
        assert_eq!(
            BootParams::parse("provisioner.url=https://a provisioner.mac=x provisioner.token=t"),
            Err(CmdlineError::BadUrl("https://a".to_string()))
        );
        assert_eq!(
            BootParams::parse(
                "provisioner.url=http://a provisioner.mac=52:54:00:12:34 provisioner.token=t"
            ),
            Err(CmdlineError::BadMac(BadMac("52:54:00:12:34".to_string())))
        );
    }

    #[test]
    fn a_similar_key_is_not_the_parameter() {
        let cmdline = "xprovisioner.url=http://a provisioner.urls=http://b";
        assert_eq!(BootParams::parse(cmdline), Err(CmdlineError::Missing(URL)));
    }
}
