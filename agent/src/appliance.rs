//! The appliance's agent API (see `provisioner_protocol`), over plain HTTP: the provisioning
//! network is the site's own and the agent carries no TLS. Each call returns an [`Answer`]:
//! what the agent does next depends only on that, so the meaning of every status is decided
//! in the two pure functions [`report_answer`] and [`next_answer`].

use std::io;
use std::time::Duration;

use provisioner_protocol::burnin::BurnInReport;
use provisioner_protocol::install::{InstallReport, InstalledReport};
use provisioner_protocol::{
    InspectionReport, Instruction, PATH_BURNIN, PATH_INSPECTION, PATH_INSTALL, PATH_INSTALLED,
    PATH_NEXT, PATH_PROGRESS, ProgressReport, Refusal,
};
use ureq::http::StatusCode;

/// Bodies the agent reads are a refusal or an instruction: small.
const MAX_BODY: u64 = 64 * 1024;
/// How much of an unexpected body is shown on the console.
const SHOWN_BODY: usize = 200;

/// What a call's answer means for the agent.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer<T> {
    Done(T),
    /// The appliance said no, and asking the same again will not change that.
    Refused(String),
    /// The appliance is not reachable or not well: ask again later. Says why.
    Retry(String),
}

pub struct Appliance {
    agent: ureq::Agent,
    url: String,
    bearer: String,
}

impl Appliance {
    /// `url` without a trailing `/`; `timeout` bounds a whole call, so a wedged appliance
    /// cannot hang the node.
    pub fn new(url: &str, token: &str, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The appliance is on the local network: a proxy from the environment of a
            // technician's shell must not be used to reach it.
            .proxy(None)
            .timeout_global(Some(timeout))
            .user_agent(concat!("provisioner-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Appliance {
            agent: config.new_agent(),
            url: url.to_string(),
            bearer: format!("Bearer {token}"),
        }
    }

    /// `POST {url}/api/v1/agent/inspection`.
    pub fn report(&self, report: &InspectionReport) -> Answer<()> {
        self.post(PATH_INSPECTION, report, "the report")
    }

    /// `POST {url}/api/v1/agent/burnin`.
    pub fn burnin(&self, report: &BurnInReport) -> Answer<()> {
        self.post(PATH_BURNIN, report, "the burn-in")
    }

    /// `POST {url}/api/v1/agent/install`.
    pub fn install(&self, report: &InstallReport) -> Answer<()> {
        self.post(PATH_INSTALL, report, "the install report")
    }

    /// `POST {url}/api/v1/agent/installed`: the installed system's first call.
    pub fn installed(&self, report: &InstalledReport) -> Answer<()> {
        self.post(PATH_INSTALLED, report, "the installed report")
    }

    /// `POST {url}/api/v1/agent/drivers`: the installed system's check of its driver set.
    pub fn drivers(&self, report: &provisioner_protocol::drivers::DriversReport) -> Answer<()> {
        self.post(
            provisioner_protocol::PATH_DRIVERS,
            report,
            "the driver report",
        )
    }

    /// `POST {url}/api/v1/agent/progress`.
    pub fn progress(&self, report: &ProgressReport) -> Answer<()> {
        self.post(PATH_PROGRESS, report, "progress")
    }

    /// POSTs `body` as JSON to `path`; `what` names it when it cannot be encoded.
    fn post(&self, path: &str, body: &impl serde::Serialize, what: &str) -> Answer<()> {
        let body = match serde_json::to_string(body) {
            Ok(body) => body,
            Err(e) => return Answer::Refused(format!("cannot encode {what}: {e}")),
        };
        let call = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Authorization", &self.bearer)
            .content_type("application/json")
            .send(&body);
        match call {
            Ok(mut response) => report_answer(response.status(), &read_body(&mut response)),
            Err(e) => Answer::Retry(unreachable(&e)),
        }
    }

    /// `GET {url}/api/v1/agent/next?mac=MAC`.
    pub fn next(&self, mac: &str) -> Answer<Instruction> {
        let call = self
            .agent
            .get(format!("{}{PATH_NEXT}", self.url))
            .query_raw("mac", mac)
            .header("Authorization", &self.bearer)
            .call();
        match call {
            Ok(mut response) => next_answer(response.status(), &read_body(&mut response)),
            Err(e) => Answer::Retry(unreachable(&e)),
        }
    }
}

fn read_body(response: &mut ureq::http::Response<ureq::Body>) -> String {
    response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_else(|e| format!("(body unreadable: {e})"))
}

/// A 2xx takes the report; 5xx is the appliance's trouble, to retry; anything else (401,
/// 403, 409 with a [`Refusal`]) will not change by sending the same again.
pub fn report_answer(status: StatusCode, body: &str) -> Answer<()> {
    if status.is_success() {
        Answer::Done(())
    } else if status.is_server_error() {
        Answer::Retry(format!("appliance answered {}", show_status(status)))
    } else {
        Answer::Refused(refusal(status, body))
    }
}

/// A 2xx carries an [`Instruction`]. Everything else is retried: without an instruction the
/// agent has nothing else to do, and a refusal may be lifted by the operator.
pub fn next_answer(status: StatusCode, body: &str) -> Answer<Instruction> {
    if status.is_success() {
        match serde_json::from_str(body) {
            Ok(instruction) => Answer::Done(instruction),
            Err(e) => Answer::Retry(format!(
                "appliance answered an instruction the agent cannot read ({e}): {}",
                shown(body)
            )),
        }
    } else if status.is_server_error() {
        Answer::Retry(format!("appliance answered {}", show_status(status)))
    } else {
        Answer::Retry(refusal(status, body))
    }
}

fn refusal(status: StatusCode, body: &str) -> String {
    let why = match serde_json::from_str::<Refusal>(body) {
        Ok(refusal) => refusal.error,
        Err(_) => shown(body).to_string(),
    };
    format!("appliance refused ({}): {why}", show_status(status))
}

/// `503 Service Unavailable`
fn show_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn shown(body: &str) -> &str {
    let body = body.trim();
    match body.char_indices().nth(SHOWN_BODY) {
        Some((end, _)) => &body[..end],
        None => body,
    }
}

/// `appliance unreachable (connection refused)`: the reason in the words an operator at
/// the console knows.
fn unreachable(e: &ureq::Error) -> String {
    let why = match e {
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::TimedOut
            | io::ErrorKind::UnexpectedEof => io.kind().to_string(),
            _ => io.to_string(),
        },
        other => other.to_string(),
    };
    format!("appliance unreachable ({why})")
}

impl crate::progress::Sink for &Appliance {
    fn progress(&self, report: &ProgressReport) -> Answer<()> {
        Appliance::progress(self, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    #[test]
    fn report_is_done_on_202_retried_on_5xx_and_refused_on_4xx() {
        assert_eq!(report_answer(status(202), ""), Answer::Done(()));
        assert_eq!(
            report_answer(status(503), "busy"),
            Answer::Retry("appliance answered 503 Service Unavailable".to_string())
        );
        assert_eq!(
            report_answer(status(409), r#"{"error":"node is installing"}"#),
            Answer::Refused("appliance refused (409 Conflict): node is installing".to_string())
        );
        assert_eq!(
            report_answer(status(401), "no token\n"),
            Answer::Refused("appliance refused (401 Unauthorized): no token".to_string())
        );
    }

    #[test]
    fn next_reads_each_instruction() {
        let cases = [
            (r#"{"action":"report"}"#, Instruction::Report),
            (
                r#"{"action":"wait","seconds":30,"reason":"matching"}"#,
                Instruction::Wait {
                    seconds: 30,
                    reason: "matching".to_string(),
                },
            ),
            (
                r#"{"action":"power_off","reason":"inspected"}"#,
                Instruction::PowerOff {
                    reason: "inspected".to_string(),
                },
            ),
            (
                r#"{"action":"reboot","reason":"install"}"#,
                Instruction::Reboot {
                    reason: "install".to_string(),
                },
            ),
        ];
        for (body, instruction) in cases {
            assert_eq!(next_answer(status(200), body), Answer::Done(instruction));
        }
    }

    #[test]
    fn next_retries_what_it_cannot_use() {
        let Answer::Retry(why) = next_answer(status(200), r#"{"action":"dance"}"#) else {
            panic!("an unknown instruction is retried");
        };
        assert!(why.starts_with("appliance answered an instruction the agent cannot read"));
        assert!(why.ends_with(r#"{"action":"dance"}"#), "{why}");
        assert_eq!(
            next_answer(status(403), r#"{"error":"token is for another boot"}"#),
            Answer::Retry(
                "appliance refused (403 Forbidden): token is for another boot".to_string()
            )
        );
        assert_eq!(
            next_answer(status(502), ""),
            Answer::Retry("appliance answered 502 Bad Gateway".to_string())
        );
    }

    #[test]
    fn long_bodies_are_cut_for_the_console() {
        let body = "x".repeat(1000);
        assert_eq!(shown(&body).len(), SHOWN_BODY);
    }
}
