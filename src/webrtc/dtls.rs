//! The crypto provider every str0m peer of the gateway uses: str0m's own
//! (dimpl's DTLS on AWS-LC, AWS-LC's SRTP and hashes), except that the DTLS
//! configuration is built once per process, not once per peer.
//!
//! Why by hand: str0m's AWS-LC provider builds a fresh `dimpl::Config` for
//! every DTLS instance, and dimpl validates the crypto provider on every
//! build: a test key exchange on X25519, P-256 and P-384 and test ECDSA
//! verifications on both curves. That validation cost more than the DTLS
//! handshake it precedes (over half of a setup's CPU in the setup bench's
//! profile). The provider cannot change between peers, so one validated
//! configuration serves them all; dimpl takes it as an `Arc` for that.
//!
//! Owns only that cache; it must not touch certificates, ICE or sockets.

use std::sync::{Arc, OnceLock};
use std::time::Instant;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// The provider for `RtcConfig::set_crypto_provider`: str0m's default, with
/// the shared DTLS configuration.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    static DTLS: SharedConfigDtls = SharedConfigDtls {
        config: OnceLock::new(),
    };
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                dtls_provider: &DTLS,
                ..str0m::crypto::from_feature_flags()
            })
        })
        .clone()
}

/// dimpl with one configuration, built and validated on first use, for
/// every instance that asks for the same MTU.
#[derive(Debug)]
struct SharedConfigDtls {
    config: OnceLock<(Option<usize>, Arc<dimpl::Config>)>,
}

/// The configuration str0m's AWS-LC provider builds per instance: ICE has
/// verified return routability before DTLS starts, so no server cookie.
fn build_config(mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
    let mut builder = dimpl::Config::builder().use_server_cookie(false);
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    builder
        .build()
        .map(Arc::new)
        .map_err(|e| CryptoError::Other(format!("DTLS configuration: {e}")))
}

impl SharedConfigDtls {
    /// The shared configuration when `mtu` is the one it was built for
    /// (str0m asks every peer's with the same), else one built afresh.
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        if let Some((cached_mtu, config)) = self.config.get()
            && *cached_mtu == mtu
        {
            return Ok(config.clone());
        }
        let built = build_config(mtu)?;
        let (cached_mtu, cached) = self.config.get_or_init(|| (mtu, built.clone()));
        Ok(if *cached_mtu == mtu {
            cached.clone()
        } else {
            built
        })
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        super::generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = cert.clone();
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version {other}"
                )));
            }
        };
        Ok(Box::new(Instance(dtls)))
    }
}

/// A dimpl instance as str0m drives it.
struct Instance(dimpl::Dtls);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Instance")
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_configuration_serves_every_instance_of_the_same_mtu() {
        let dtls = SharedConfigDtls {
            config: OnceLock::new(),
        };
        let a = dtls.config(Some(1150)).expect("config");
        let b = dtls.config(Some(1150)).expect("config");
        assert!(Arc::ptr_eq(&a, &b));
        let other = dtls.config(Some(1200)).expect("config");
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(other.mtu(), 1200);
    }
}
