//! Identity and trust for QUIC mutual TLS between the nodes of one cluster.
//!
//! Every cluster has a certificate authority, a [`ClusterCa`]. It issues each node a certificate,
//! held in [`NodeCredentials`], that binds two names:
//!
//! - the cluster, as the DNS name `<cluster>.micro.cluster` ([`server_name`]). Every node of a
//!   cluster answers to that one name, so a client checks "signed by our CA and issued for our
//!   cluster" with the standard WebPKI verification, whatever address it dialled;
//! - the node, as the URI `micro://<cluster>/node/<the node id in 32 hex digits>`, read back
//!   after the handshake by [`peer_node_id`].
//!
//! Both sides authenticate, and both check the same thing: the peer's certificate chains to the
//! cluster's CA, is valid now, is good for both server and client authentication (every node
//! dials and is dialled), and names this cluster and one node of it. A CA may sign for several
//! clusters; a node of one of them is still refused by the others.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;

use crate::{Error, NodeId};

/// The one application protocol nodes speak, negotiated by ALPN.
pub(crate) const ALPN: &[u8] = b"micro/1";

/// The domain under which every cluster has its server name.
const SERVER_NAME_DOMAIN: &str = "micro.cluster";
/// How node URIs start: `micro://<cluster>/node/<32 hex digits>`.
const NODE_URI_SCHEME: &str = "micro://";
/// Between the cluster and the node id in a node URI.
const NODE_URI_PATH: &str = "/node/";
/// The cluster name of the development CA.
const DEV_CLUSTER: &str = "dev";
/// Certificates are valid from this long ago, so a peer whose clock is a little behind accepts them.
const BACKDATE: Duration = Duration::days(1);
/// How long a cluster CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a node certificate is valid. Nodes get new ids (and certificates) at every start.
const NODE_VALIDITY: Duration = Duration::days(365);

/// The TLS server name a client dials with: `<cluster>.micro.cluster`.
///
/// It is the same for every node of a cluster, so trust is checked against the cluster, not
/// against the address dialled. `cluster` must be a valid cluster name, as the one of any
/// [`ClusterCa`] or [`NodeCredentials`] is (they refuse others), which makes this a valid DNS
/// name.
pub(crate) fn server_name(cluster: &str) -> String {
    format!("{cluster}.{SERVER_NAME_DOMAIN}")
}

/// The verified peer's node id, from its certificate, after the handshake.
///
/// Fails with [`Error::Untrusted`] if the connection carries no certificate that names a node
/// (which a connection made with [`NodeCredentials`] configs never does: the handshake already
/// refused such peers).
pub(crate) fn peer_node_id(connection: &quinn::Connection) -> Result<NodeId, Error> {
    let untrusted = |reason: String| Error::Untrusted {
        peer: connection.remote_address().to_string(),
        reason,
    };
    let identity = connection
        .peer_identity()
        .ok_or_else(|| untrusted("the peer presented no certificate".to_owned()))?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| {
            untrusted("the peer's identity is not an X.509 certificate chain".to_owned())
        })?;
    let leaf = chain
        .first()
        .ok_or_else(|| untrusted("the peer presented an empty certificate chain".to_owned()))?;
    let (_, node) = node_identity(leaf).map_err(untrusted)?;
    Ok(node)
}

/// A cluster's certificate authority: signs node certificates.
///
/// The operator keeps the CA (its key signs); each node gets [`NodeCredentials`] issued by it.
/// For development, [`ClusterCa::dev`] gives one shared CA per machine user.
///
/// # Example
///
/// ```
/// use micro_runtime::{ClusterCa, NodeCredentials, NodeId};
///
/// # fn main() -> Result<(), micro_runtime::Error> {
/// let ca = ClusterCa::generate("orders")?;
/// let node = ca.issue(NodeId::random())?;
///
/// // Hand the node its PEMs (the CA key stays with the operator), and load them there.
/// let loaded =
///     NodeCredentials::from_pem("orders", &ca.cert_pem(), &node.cert_pem(), &node.key_pem())?;
/// assert_eq!(loaded.node_id(), node.node_id());
/// assert_eq!(loaded.ca_fingerprint(), ca.fingerprint());
/// # Ok(())
/// # }
/// ```
pub struct ClusterCa {
    cluster: String,
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl ClusterCa {
    /// A new self-signed CA whose subject names `cluster`.
    ///
    /// Cluster names are 1 to 63 lowercase ASCII letters, digits or hyphens, not starting or
    /// ending with a hyphen (one DNS label); others are refused with [`Error::Identity`].
    pub fn generate(cluster: &str) -> Result<Self, Error> {
        check_cluster(cluster)?;
        let key = KeyPair::generate().map_err(|e| identity("generating the CA key", e))?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        // A random tag in the name tells CAs of one cluster name apart in errors ("unknown
        // issuer" rather than "bad signature" when a stranger's CA has the same name).
        let tag: u32 = rand::random();
        params.distinguished_name =
            subject(cluster, &format!("micro cluster CA {cluster} {tag:08x}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params
            .self_signed(&key)
            .map_err(|e| identity("signing the CA certificate", e))?;
        Ok(ClusterCa {
            cluster: cluster.to_owned(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and private key in PEM, signing for `cluster`.
    ///
    /// The certificate must be a CA certificate and the key its key. The CA need not have been
    /// generated for `cluster`: one CA may sign for several clusters, whose nodes still refuse
    /// each other. Bad PEM, a mismatched key or an invalid cluster name give [`Error::Identity`].
    pub fn from_pem(cluster: &str, cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        check_cluster(cluster)?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| identity("reading the CA certificate PEM", e))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| identity("reading the CA key PEM", e))?;
        {
            let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
                .map_err(|e| identity("parsing the CA certificate", e))?;
            if !parsed.is_ca() {
                return Err(Error::Identity(
                    "the CA certificate is not a CA certificate (no basicConstraints CA:true)"
                        .to_owned(),
                ));
            }
            if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
                return Err(Error::Identity(
                    "the CA key is not the key of the CA certificate".to_owned(),
                ));
            }
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| identity("reading the CA certificate", e))?;
        Ok(ClusterCa {
            cluster: cluster.to_owned(),
            cert,
            issuer,
        })
    }

    /// The development CA: one per machine user, for cluster `"dev"`.
    ///
    /// It lives in `$MICRO_DEV_CA_DIR` if set, else `$XDG_DATA_HOME/micro/dev-ca`, else
    /// `~/.local/share/micro/dev-ca`, as `ca.pem` and `ca.key` (mode 0600, in a directory made
    /// with mode 0700). The first call on a machine creates it, under an exclusive file lock so
    /// that processes starting together agree on one CA; later calls read it. File problems give
    /// [`Error::Io`], unreadable files [`Error::Identity`].
    pub fn dev() -> Result<Self, Error> {
        Self::dev_at(&dev_dir()?)
    }

    /// The development CA kept in `dir`, created there if missing (see [`ClusterCa::dev`]).
    pub(crate) fn dev_at(dir: &Path) -> Result<Self, Error> {
        let reading = io_error("reading dev CA at", dir);
        let writing = io_error("writing dev CA at", dir);
        create_private_dir(dir).map_err(&writing)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("ca.lock"))
            .map_err(&writing)?;
        // flock(2): exclusive between processes, and between threads of one process too, since
        // each open of the file is its own holder. Closing `lock` releases it.
        fs4::FileExt::lock(&lock).map_err(&reading)?;

        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if cert_path.try_exists().map_err(&reading)? {
            let cert = fs::read_to_string(&cert_path).map_err(&reading)?;
            let key = fs::read_to_string(&key_path).map_err(&reading)?;
            Self::from_pem(DEV_CLUSTER, &cert, &key).map_err(|e| match e {
                Error::Identity(detail) => {
                    Error::Identity(format!("dev CA at {}: {detail}", dir.display()))
                }
                other => other,
            })
        } else {
            let ca = Self::generate(DEV_CLUSTER)?;
            // The key first: a certificate on disk always has its key beside it.
            write_private(dir, "ca.key", &ca.key_pem()).map_err(&writing)?;
            write_private(dir, "ca.pem", &ca.cert_pem()).map_err(&writing)?;
            Ok(ca)
        }
    }

    /// The CA certificate in PEM: what every node of the cluster trusts.
    pub fn cert_pem(&self) -> String {
        to_pem("CERTIFICATE", &self.cert)
    }

    /// The CA private key in PEM (PKCS#8). Keep it secret: it signs nodes into the cluster.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The cluster this CA signs for.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The SHA-256 of the CA certificate (DER), in lowercase hex: how to tell CAs apart.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    /// A certificate and key for `node`, signed by this CA, naming this cluster and the node.
    pub fn issue(&self, node: NodeId) -> Result<NodeCredentials, Error> {
        let key = KeyPair::generate().map_err(|e| identity("generating a node key", e))?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(
            &self.cluster,
            &format!("micro node {:032x}", node.as_u128()),
        );
        let dns = server_name(&self.cluster)
            .try_into()
            .map_err(|e| identity("naming the cluster in a certificate", e))?;
        let uri = node_uri(&self.cluster, node)
            .try_into()
            .map_err(|e| identity("naming the node in a certificate", e))?;
        params.subject_alt_names = vec![SanType::DnsName(dns), SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = now + NODE_VALIDITY;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| identity("signing a node certificate", e))?;
        Ok(NodeCredentials {
            cluster: self.cluster.clone(),
            node_id: node,
            ca: self.cert.clone(),
            chain: vec![cert.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            ))),
        })
    }
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster", &self.cluster)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// What a node presents and whom it trusts: its certificate and key, and its cluster's CA.
#[derive(Clone)]
pub struct NodeCredentials {
    cluster: String,
    node_id: NodeId,
    ca: CertificateDer<'static>,
    /// The node's certificate first, then any intermediates.
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl NodeCredentials {
    /// Credentials from PEM: the cluster's CA certificate, the node's certificate (optionally
    /// followed by intermediates) and the node's private key.
    ///
    /// The node id is read from the certificate. Fails with [`Error::Identity`] on bad PEM, a
    /// certificate that names no node or another cluster, one that the CA did not sign or that
    /// is not valid now, or a key that is not the certificate's.
    pub fn from_pem(
        cluster: &str,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, Error> {
        check_cluster(cluster)?;
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| identity("reading the CA certificate PEM", e))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| identity("reading the node certificate PEM", e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| identity("reading the node key PEM", e))?;
        let leaf = chain.first().ok_or_else(|| {
            Error::Identity("the node certificate PEM holds no certificate".to_owned())
        })?;
        let (cert_cluster, node_id) = node_identity(leaf)
            .map_err(|e| Error::Identity(format!("the node certificate: {e}")))?;
        if cert_cluster != cluster {
            return Err(Error::Identity(format!(
                "the node certificate is for cluster {cert_cluster:?}, not {cluster:?}"
            )));
        }
        let credentials = NodeCredentials {
            cluster: cluster.to_owned(),
            node_id,
            ca,
            chain,
            key: Arc::new(key),
        };
        credentials.check()?;
        Ok(credentials)
    }

    /// The node these credentials are for.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The cluster these credentials are for.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The fingerprint of the trusted CA (see [`ClusterCa::fingerprint`]).
    pub fn ca_fingerprint(&self) -> String {
        fingerprint(&self.ca)
    }

    /// The trusted CA's certificate in PEM.
    pub fn ca_pem(&self) -> String {
        to_pem("CERTIFICATE", &self.ca)
    }

    /// The node's certificate chain in PEM, the node's certificate first.
    pub fn cert_pem(&self) -> String {
        self.chain
            .iter()
            .map(|cert| to_pem("CERTIFICATE", cert))
            .collect()
    }

    /// The node's private key in PEM.
    pub fn key_pem(&self) -> String {
        let tag = match &*self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        to_pem(tag, self.key.secret_der())
    }

    /// The QUIC server side: presents the node's certificate, requires a client certificate
    /// of this cluster from this CA, and speaks [`ALPN`] over TLS 1.3.
    pub(crate) fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, Error> {
        let provider = provider();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| identity("configuring TLS", e))?
            .with_client_cert_verifier(self.client_verifier(&provider)?)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| identity("configuring the node certificate", e))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| identity("configuring QUIC TLS", e))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(transport);
        Ok(config)
    }

    /// The QUIC client side: presents the node's certificate, requires a server certificate
    /// of this cluster from this CA, and speaks [`ALPN`] over TLS 1.3. Dial with
    /// [`server_name`] of the cluster.
    pub(crate) fn client_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, Error> {
        let provider = provider();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| identity("configuring TLS", e))?
            .dangerous()
            .with_custom_certificate_verifier(self.server_verifier(&provider)?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| identity("configuring the node certificate", e))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| identity("configuring QUIC TLS", e))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(transport);
        Ok(config)
    }

    /// Checks the node's own certificate as its peers will, and that the key is its key.
    fn check(&self) -> Result<(), Error> {
        let provider = provider();
        let [leaf, intermediates @ ..] = self.chain.as_slice() else {
            return Err(Error::Identity(
                "the node certificate PEM holds no certificate".to_owned(),
            ));
        };
        let now = UnixTime::now();
        let refused = |e: rustls::Error| {
            Error::Identity(format!(
                "the node certificate is not valid for cluster {:?} under this CA: {e}",
                self.cluster
            ))
        };
        self.server_verifier(&provider)?
            .verify_server_cert(leaf, intermediates, &self.server_name()?, &[], now)
            .map_err(refused)?;
        self.client_verifier(&provider)?
            .verify_client_cert(leaf, intermediates, now)
            .map_err(refused)?;
        rustls::sign::CertifiedKey::from_der(self.chain.clone(), self.key.clone_key(), &provider)
            .map_err(|e| identity("the node key does not fit the node certificate", e))?;
        Ok(())
    }

    fn server_name(&self) -> Result<ServerName<'static>, Error> {
        ServerName::try_from(server_name(&self.cluster))
            .map_err(|e| identity("the cluster's server name", e))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, Error> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| identity("the CA certificate is not a usable trust anchor", e))?;
        Ok(Arc::new(roots))
    }

    fn client_verifier(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<ClusterClientVerifier>, Error> {
        let inner = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| identity("configuring client verification", e))?;
        Ok(Arc::new(ClusterClientVerifier {
            inner,
            cluster: self.cluster.clone(),
            server_name: self.server_name()?,
        }))
    }

    fn server_verifier(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<ClusterServerVerifier>, Error> {
        let inner = WebPkiServerVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| identity("configuring server verification", e))?;
        Ok(Arc::new(ClusterServerVerifier {
            inner,
            cluster: self.cluster.clone(),
        }))
    }
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("cluster", &self.cluster)
            .field("node_id", &self.node_id)
            .field("ca_fingerprint", &self.ca_fingerprint())
            .finish_non_exhaustive()
    }
}

/// Checks a client (a dialling node): WebPKI under the CA, with client-auth usage, and then
/// that the certificate names this cluster and a node of it. The CA alone is not enough, as it
/// may sign for other clusters too.
#[derive(Debug)]
struct ClusterClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    cluster: String,
    server_name: ServerName<'static>,
}

impl ClientCertVerifier for ClusterClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        // The same name check a client makes of a server.
        rustls::client::verify_server_name(
            &ParsedCertificate::try_from(end_entity)?,
            &self.server_name,
        )?;
        check_names_node_of(end_entity, &self.cluster)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks a server (a dialled node): standard WebPKI under the CA for the dialled server name,
/// and then that the certificate names this cluster and a node of it, so a client never
/// completes a handshake with a peer whose node id it cannot read.
#[derive(Debug)]
struct ClusterServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    cluster: String,
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_names_node_of(end_entity, &self.cluster)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Refuses (as a TLS certificate error) a certificate that does not name a node of `cluster`.
fn check_names_node_of(cert: &CertificateDer<'_>, cluster: &str) -> Result<(), rustls::Error> {
    match node_identity(cert) {
        Ok((named, _)) if named == cluster => Ok(()),
        _ => Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        )),
    }
}

/// The cluster and node a node certificate names: its one `micro://<cluster>/node/<hex>` URI,
/// with the cluster's server name beside it as a DNS name. Says what is wrong otherwise.
fn node_identity(cert: &CertificateDer<'_>) -> Result<(String, NodeId), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let names = parsed
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subject alternative names: {e}"))?
        .ok_or("the certificate has no subject alternative names")?;
    let mut dns_names = Vec::new();
    let mut nodes = Vec::new();
    for name in &names.value.general_names {
        match name {
            GeneralName::DNSName(dns) => dns_names.push(*dns),
            GeneralName::URI(uri) => {
                if let Some(node) = uri.strip_prefix(NODE_URI_SCHEME) {
                    nodes.push(node);
                }
            }
            _ => {}
        }
    }
    let [node] = nodes.as_slice() else {
        return Err(format!(
            "the certificate names {} nodes ({NODE_URI_SCHEME}… URIs), not one",
            nodes.len()
        ));
    };
    let malformed = || format!("malformed node URI {NODE_URI_SCHEME}{node}");
    let (cluster, hex) = node.split_once(NODE_URI_PATH).ok_or_else(malformed)?;
    check_cluster(cluster).map_err(|_| malformed())?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    let id = u128::from_str_radix(hex, 16).map_err(|_| malformed())?;
    let expected = server_name(cluster);
    if !dns_names
        .iter()
        .any(|dns| dns.eq_ignore_ascii_case(&expected))
    {
        return Err(format!(
            "the certificate names a node of cluster {cluster:?} but not the DNS name {expected}"
        ));
    }
    Ok((cluster.to_owned(), NodeId::from_u128(id)))
}

fn node_uri(cluster: &str, node: NodeId) -> String {
    format!(
        "{NODE_URI_SCHEME}{cluster}{NODE_URI_PATH}{:032x}",
        node.as_u128()
    )
}

/// Refuses cluster names that are not one lowercase DNS label.
fn check_cluster(cluster: &str) -> Result<(), Error> {
    let valid = (1..=63).contains(&cluster.len())
        && cluster
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !cluster.starts_with('-')
        && !cluster.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(Error::Identity(format!(
            "invalid cluster name {cluster:?}: use 1 to 63 lowercase letters, digits or hyphens, \
             not starting or ending with a hyphen"
        )))
    }
}

fn subject(cluster: &str, common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "micro");
    name.push(DnType::OrganizationalUnitName, cluster);
    name.push(DnType::CommonName, common_name);
    name
}

/// Everything is built with ring, whatever provider the process may have installed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn to_pem(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn identity(what: &str, error: impl fmt::Display) -> Error {
    Error::Identity(format!("{what}: {error}"))
}

fn io_error(action: &'static str, dir: &Path) -> impl Fn(io::Error) -> Error {
    let context = format!("{action} {}", dir.display());
    move |error| Error::Io {
        context: context.clone(),
        detail: error.to_string(),
    }
}

/// Where the development CA lives (see [`ClusterCa::dev`]).
fn dev_dir() -> Result<PathBuf, Error> {
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = var("MICRO_DEV_CA_DIR") {
        return Ok(dir.into());
    }
    if let Some(data) = var("XDG_DATA_HOME").map(PathBuf::from) {
        // The XDG spec says to ignore relative paths.
        if data.is_absolute() {
            return Ok(data.join("micro").join("dev-ca"));
        }
    }
    if let Some(home) = var("HOME") {
        return Ok(PathBuf::from(home).join(".local/share/micro/dev-ca"));
    }
    Err(Error::Io {
        context: "locating the dev CA".to_owned(),
        detail: "none of MICRO_DEV_CA_DIR, XDG_DATA_HOME and HOME is set".to_owned(),
    })
}

/// Creates `dir` (and missing parents) readable by its owner only.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes `dir/name` readable by its owner only, atomically (a temporary file renamed over it).
fn write_private(dir: &Path, name: &str, contents: &str) -> io::Result<()> {
    let temporary = dir.join(format!(".{name}.tmp"));
    match fs::remove_file(&temporary) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join(name))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use super::*;

    const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

    fn transport() -> Arc<quinn::TransportConfig> {
        Arc::new(quinn::TransportConfig::default())
    }

    /// What came of one node dialling another over loopback.
    struct Handshake {
        /// The dialling side's connection, or why it failed.
        dialled: Result<quinn::Connection, quinn::ConnectionError>,
        /// The dialled side's connection, or why it failed.
        accepted: Result<quinn::Connection, quinn::ConnectionError>,
        /// Kept open until the story is told.
        _endpoints: (quinn::Endpoint, quinn::Endpoint),
    }

    /// `client` dials `server` as nodes do: with the server name of its own cluster.
    async fn dial(client: &NodeCredentials, server: &NodeCredentials) -> Handshake {
        let server_endpoint =
            quinn::Endpoint::server(server.server_config(transport()).unwrap(), LOOPBACK).unwrap();
        let client_endpoint = quinn::Endpoint::client(LOOPBACK).unwrap();
        let connecting = client_endpoint
            .connect_with(
                client.client_config(transport()).unwrap(),
                server_endpoint.local_addr().unwrap(),
                &server_name(client.cluster()),
            )
            .unwrap();
        let accepting = async {
            let incoming = server_endpoint
                .accept()
                .await
                .expect("the endpoint is open");
            incoming.await
        };
        let (dialled, accepted) = tokio::time::timeout(
            Duration::from_secs(5),
            futures::future::join(connecting, accepting),
        )
        .await
        .expect("the handshake settles either way");
        Handshake {
            dialled,
            accepted,
            _endpoints: (client_endpoint, server_endpoint),
        }
    }

    fn alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
        connection
            .handshake_data()?
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .ok()?
            .protocol
    }

    #[test]
    fn cas_and_credentials_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<ClusterCa>();
        shareable::<NodeCredentials>();
    }

    #[test]
    fn issued_credentials_survive_a_round_trip_through_pem() {
        let ca = ClusterCa::generate("orders").unwrap();
        let node = NodeId::random();
        let issued = ca.issue(node).unwrap();
        assert_eq!(issued.node_id(), node);
        assert_eq!(issued.cluster(), "orders");

        let loaded = NodeCredentials::from_pem(
            "orders",
            &ca.cert_pem(),
            &issued.cert_pem(),
            &issued.key_pem(),
        )
        .unwrap();
        assert_eq!(loaded.node_id(), node);
        assert_eq!(loaded.cluster(), "orders");
        assert_eq!(loaded.ca_fingerprint(), ca.fingerprint());
        assert_eq!(loaded.ca_fingerprint().len(), 64);
        assert_eq!(loaded.cert_pem(), issued.cert_pem());
        assert_eq!(loaded.key_pem(), issued.key_pem());

        // The CA itself survives PEM too, and keeps signing nodes its old nodes trust.
        let reloaded = ClusterCa::from_pem("orders", &ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(reloaded.fingerprint(), ca.fingerprint());
        assert_eq!(reloaded.cluster(), "orders");
        let other = reloaded.issue(NodeId::random()).unwrap();
        NodeCredentials::from_pem(
            "orders",
            &issued.ca_pem(),
            &other.cert_pem(),
            &other.key_pem(),
        )
        .unwrap();
    }

    #[test]
    fn bad_identities_are_refused_with_typed_errors() {
        let ca = ClusterCa::generate("orders").unwrap();
        let issued = ca.issue(NodeId::random()).unwrap();
        let identity_error = |result: Result<NodeCredentials, Error>| match result {
            Err(Error::Identity(detail)) => detail,
            other => panic!("expected an identity error, got {other:?}"),
        };

        for name in [
            "",
            "Orders",
            "or ders",
            "-orders",
            "orders.eu",
            &"x".repeat(64),
        ] {
            assert!(
                matches!(ClusterCa::generate(name), Err(Error::Identity(_))),
                "{name:?}"
            );
        }
        assert!(matches!(
            ClusterCa::from_pem("orders", "not pem", &ca.key_pem()),
            Err(Error::Identity(_))
        ));
        // A node certificate is not a CA, and a key must be the certificate's.
        assert!(matches!(
            ClusterCa::from_pem("orders", &issued.cert_pem(), &issued.key_pem()),
            Err(Error::Identity(_))
        ));
        let stranger = ClusterCa::generate("orders").unwrap();
        assert!(matches!(
            ClusterCa::from_pem("orders", &ca.cert_pem(), &stranger.key_pem()),
            Err(Error::Identity(_))
        ));

        let garbled = identity_error(NodeCredentials::from_pem(
            "orders",
            &ca.cert_pem(),
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            &issued.key_pem(),
        ));
        assert!(garbled.contains("node certificate PEM"), "{garbled}");
        let no_node = identity_error(NodeCredentials::from_pem(
            "orders",
            &ca.cert_pem(),
            &ca.cert_pem(),
            &ca.key_pem(),
        ));
        assert!(no_node.starts_with("the node certificate: "), "{no_node}");
        let wrong_cluster = identity_error(NodeCredentials::from_pem(
            "billing",
            &ca.cert_pem(),
            &issued.cert_pem(),
            &issued.key_pem(),
        ));
        assert!(
            wrong_cluster.contains("for cluster \"orders\""),
            "{wrong_cluster}"
        );
        let wrong_ca = identity_error(NodeCredentials::from_pem(
            "orders",
            &stranger.cert_pem(),
            &issued.cert_pem(),
            &issued.key_pem(),
        ));
        assert!(wrong_ca.contains("not valid for cluster"), "{wrong_ca}");
        let other_key = ca.issue(NodeId::random()).unwrap().key_pem();
        let wrong_key = identity_error(NodeCredentials::from_pem(
            "orders",
            &ca.cert_pem(),
            &issued.cert_pem(),
            &other_key,
        ));
        assert!(wrong_key.contains("does not fit"), "{wrong_key}");
    }

    #[tokio::test]
    async fn two_nodes_of_one_cluster_shake_hands_and_learn_each_others_ids() {
        let ca = ClusterCa::generate("orders").unwrap();
        let alice = ca.issue(NodeId::random()).unwrap();
        let bob = ca.issue(NodeId::random()).unwrap();

        let handshake = dial(&alice, &bob).await;
        let at_alice = handshake.dialled.expect("alice reaches bob");
        let at_bob = handshake.accepted.expect("bob accepts alice");

        assert_eq!(peer_node_id(&at_alice).unwrap(), bob.node_id());
        assert_eq!(peer_node_id(&at_bob).unwrap(), alice.node_id());
        assert_eq!(alpn(&at_alice).as_deref(), Some(ALPN));
        assert_eq!(alpn(&at_bob).as_deref(), Some(ALPN));
    }

    #[tokio::test]
    async fn a_node_signed_by_another_ca_is_refused_on_both_sides() {
        let ours = ClusterCa::generate("orders").unwrap();
        let theirs = ClusterCa::generate("orders").unwrap();
        let member = ours.issue(NodeId::random()).unwrap();
        let impostor = theirs.issue(NodeId::random()).unwrap();

        // The impostor dials a member, and a member dials the impostor: both fail, both ends.
        for (client, server) in [(&impostor, &member), (&member, &impostor)] {
            let handshake = dial(client, server).await;
            let dialled = handshake.dialled.expect_err("the dialler sees the refusal");
            let accepted = handshake
                .accepted
                .expect_err("the dialled side sees it too");
            println!("dialler: {dialled}; dialled: {accepted}");
        }
    }

    #[tokio::test]
    async fn a_node_of_another_cluster_under_the_same_ca_is_refused() {
        let ca = ClusterCa::generate("orders").unwrap();
        let billing_ca = ClusterCa::from_pem("billing", &ca.cert_pem(), &ca.key_pem()).unwrap();
        let member = ca.issue(NodeId::random()).unwrap();
        let outsider = billing_ca.issue(NodeId::random()).unwrap();
        assert_eq!(outsider.ca_fingerprint(), member.ca_fingerprint());

        for (client, server) in [(&outsider, &member), (&member, &outsider)] {
            let handshake = dial(client, server).await;
            let dialled = handshake.dialled.expect_err("the dialler sees the refusal");
            let accepted = handshake
                .accepted
                .expect_err("the dialled side sees it too");
            println!("dialler: {dialled}; dialled: {accepted}");
        }

        // A server checks the cluster of the clients it accepts, not just their CA: an outsider
        // that would accept the member as a server (here, one misconfigured to think it is of
        // the member's cluster) is still refused by it.
        let confused = NodeCredentials {
            cluster: member.cluster().to_owned(),
            ..outsider.clone()
        };
        let handshake = dial(&confused, &member).await;
        let accepted = handshake
            .accepted
            .expect_err("the member refuses the outsider");
        let dialled = match handshake.dialled {
            // The dialler's side of the TLS 1.3 handshake ends before the server has checked
            // its certificate: it may see the refusal only as the connection closing.
            Ok(connection) => connection.closed().await,
            Err(error) => error,
        };
        println!("dialler: {dialled}; dialled: {accepted}");

        let provider = provider();
        let verifier = member.client_verifier(&provider).unwrap();
        let now = UnixTime::now();
        verifier
            .verify_client_cert(&ca.issue(NodeId::random()).unwrap().chain[0], &[], now)
            .unwrap();
        assert!(
            verifier
                .verify_client_cert(&outsider.chain[0], &[], now)
                .is_err()
        );
    }

    #[test]
    fn the_dev_ca_is_created_once_and_shared() {
        let dir = std::env::temp_dir().join(format!(
            "micro-dev-ca-test-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let ca_dir = dir.join("micro").join("dev-ca");

        // Two processes starting at once: both wait on the lock, one creates, both agree.
        let fingerprints: Vec<String> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..2)
                .map(|_| scope.spawn(|| ClusterCa::dev_at(&ca_dir).unwrap().fingerprint()))
                .collect();
            racers
                .into_iter()
                .map(|racer| racer.join().unwrap())
                .collect()
        });
        assert_eq!(fingerprints[0], fingerprints[1]);

        // Later starts read the same CA.
        let later = ClusterCa::dev_at(&ca_dir).unwrap();
        assert_eq!(later.fingerprint(), fingerprints[0]);
        assert_eq!(later.cluster(), "dev");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&ca_dir.join("ca.pem")), 0o600);
            assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
            assert_eq!(mode(&ca_dir), 0o700);
        }

        // A damaged CA is reported, with where it is.
        fs::write(ca_dir.join("ca.pem"), "garbage").unwrap();
        match ClusterCa::dev_at(&ca_dir) {
            Err(Error::Identity(detail)) => assert!(detail.contains("dev CA at"), "{detail}"),
            other => panic!("expected an identity error, got {other:?}"),
        }

        fs::remove_dir_all(&dir).unwrap();
    }
}
