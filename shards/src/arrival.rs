//! When a connection's first bytes reached this host, read from the kernel's receive timestamp.
//!
//! Two connections of one MQTT client can be accepted by different shards, and the one whose
//! CONNECT arrived last must keep the session. A shard's own clock says only when it got round
//! to a connection, which a busy shard does late: the connection opened last, accepted by an
//! idle shard, would seem the older. The kernel stamps each received packet on a clock shared
//! by all cores. Listeners ask for stamps (accepted sockets inherit the option), and the first
//! packet's stamp is read with a peek before the first read, so nothing is consumed.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, SystemTime};

/// Makes the kernel stamp every packet received on connections accepted from `listener`.
pub fn stamp_arrivals(listener: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor and an option value that lives through the call, with its
    // size.
    let result = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// When the first unread byte of the socket `fd` arrived, without reading it: `None` when
/// nothing is waiting yet or the socket carries no stamp. (Data that arrives before the peek may
/// be merged into the first packet, which then carries the later stamp: never an earlier one.)
pub fn first_unread_arrival(fd: RawFd) -> Option<SystemTime> {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // Room for a few control messages, aligned for `cmsghdr`.
    let mut control = [0u64; 16];
    // SAFETY: an all-zero `msghdr` is a valid empty one.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `message` points at the live `iov` and `control` buffers with their sizes; a
    // peek consumes nothing, and MSG_DONTWAIT never blocks the shard.
    let peeked = unsafe { libc::recvmsg(fd, &mut message, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if peeked <= 0 {
        return None;
    }
    // SAFETY: the kernel filled `message.msg_control` with well-formed control messages of
    // `msg_controllen` bytes; the CMSG macros walk them within those bounds.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET
                && (*header).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let stamp: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(header).cast());
                let since_epoch = Duration::new(
                    u64::try_from(stamp.tv_sec).ok()?,
                    u32::try_from(stamp.tv_nsec).ok()?,
                );
                return Some(SystemTime::UNIX_EPOCH + since_epoch);
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn the_first_unread_bytes_carry_their_arrival_and_stay_unread() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        stamp_arrivals(&listener).unwrap();
        // The kernel turns stamping on for the whole host a moment after the first socket asks
        // (a deferred static key): until then packets come unstamped, and a connection or two
        // may go by before one is stamped.
        for _ in 0..200 {
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (mut served, _) = listener.accept().unwrap();
            assert_eq!(
                first_unread_arrival(served.as_raw_fd()),
                None,
                "nothing sent yet"
            );
            let before = SystemTime::now();
            client.write_all(b"first").unwrap();
            let mut peeked = [0u8; 5];
            // Wait for the bytes (the peek leaves them), then see whether they were stamped.
            served.peek(&mut peeked).unwrap();
            let Some(arrival) = first_unread_arrival(served.as_raw_fd()) else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let after = SystemTime::now();
            assert!(
                before <= arrival && arrival <= after,
                "{before:?} {arrival:?} {after:?}"
            );
            assert_eq!(
                first_unread_arrival(served.as_raw_fd()),
                Some(arrival),
                "peeked again"
            );
            let mut read = [0u8; 5];
            std::io::Read::read_exact(&mut served, &mut read).unwrap();
            assert_eq!(&read, b"first");
            return;
        }
        panic!("no connection's data was ever stamped");
    }
}
