//! One read transfer on its own socket (RFC 1350, with RFC 7440 windows): send a window of
//! blocks, wait for the ACK that moves it, resend on timeout a bounded number of times.
//! An ACK that does not move the window is ignored, never answered with a resend: that is
//! the Sorcerer's Apprentice bug (RFC 1123 §4.2.3.1).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::Transfer;
use super::packet::{self, Reply};

#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub blksize: usize,
    pub window: usize,
    pub timeout: Duration,
    pub retries: u32,
    /// Resends of the first packet (OACK or block 1) before the transfer ends: until it is
    /// acknowledged nothing shows a client is there at all.
    pub first_retries: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("no answer after {0} tries")]
    GaveUp(u32),
    #[error("the client sent error {0}")]
    Client(u16),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("took longer than {0:?}")]
    TookTooLong(Duration),
    #[error("gave way to a newer request before its client acknowledged anything")]
    GaveWay,
}

/// Runs the transfer; `oack`, when options were accepted, goes first and must be ACKed 0.
/// `confirmed` is called once, when the client has acknowledged the first packet.
pub async fn run(
    socket: UdpSocket,
    mut source: Transfer,
    p: Params,
    oack: Option<Vec<u8>>,
    confirmed: impl FnOnce(),
) -> Result<(), TransferError> {
    let mut rbuf = [0u8; 512];
    let mut confirmed = Some(confirmed);
    let first = Params {
        retries: p.first_retries,
        ..p
    };
    if let Some(oack) = oack {
        let mut window = VecDeque::from([oack]);
        // The OACK is "block 0": an ACK of 0 moves it.
        wait_for_ack(&socket, &mut window, 0, &mut rbuf, first).await?;
        if let Some(f) = confirmed.take() {
            f();
        }
    }
    let mut window: VecDeque<Vec<u8>> = VecDeque::with_capacity(p.window);
    let mut base: u16 = 1;
    let mut next: u16 = 1;
    let mut eof = false;
    let mut block = vec![0u8; p.blksize];
    loop {
        while !eof && window.len() < p.window {
            let n = source.read_block(&mut block)?;
            window.push_back(packet::data(next, &block[..n]));
            next = next.wrapping_add(1);
            eof = n < p.blksize;
        }
        if window.is_empty() {
            source.finish();
            return Ok(());
        }
        let tries = if confirmed.is_some() { first } else { p };
        base = wait_for_ack(&socket, &mut window, base, &mut rbuf, tries).await?;
        if let Some(f) = confirmed.take() {
            f();
        }
    }
}

/// Sends `window` (whose first packet is block `base`) and waits for an ACK inside it;
/// drops the acknowledged packets and returns the new base.
async fn wait_for_ack(
    socket: &UdpSocket,
    window: &mut VecDeque<Vec<u8>>,
    base: u16,
    rbuf: &mut [u8],
    p: Params,
) -> Result<u16, TransferError> {
    for packet in window.iter() {
        socket.send(packet).await?;
    }
    let mut tries = 0;
    loop {
        match timeout(p.timeout, socket.recv(rbuf)).await {
            Err(_) => {
                tries += 1;
                if tries > p.retries {
                    return Err(TransferError::GaveUp(tries));
                }
                for packet in window.iter() {
                    socket.send(packet).await?;
                }
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(n)) => match packet::parse_reply(&rbuf[..n]) {
                Reply::Ack(b) => {
                    let k = usize::from(b.wrapping_sub(base));
                    if k < window.len() {
                        window.drain(..=k);
                        return Ok(b.wrapping_add(1));
                    }
                    // An old or duplicate ACK: nothing to do.
                }
                Reply::Error(code) => return Err(TransferError::Client(code)),
                Reply::Other => {}
            },
        }
    }
}
