//! Tokens from the Azure SDK for Rust (feature `azure-identity`): any `azure_core`
//! [`TokenCredential`] as the client's [`TokenProvider`], so `azure_identity`'s
//! `DeveloperToolsCredential`, `ManagedIdentityCredential`, `WorkloadIdentityCredential`,
//! `ClientSecretCredential` and the rest plug in as they are. The client still decides when
//! to ask (single flight, refresh ahead of expiry, one retry on a 401), exactly as for its
//! own token sources.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use defender_async::{AzureCredential, Client};
//! let credential = azure_identity::ManagedIdentityCredential::new(None)?;
//! let client = Client::builder()
//!     .token_provider(Arc::new(AzureCredential::new(credential)))
//!     .build()?;
//! let hunt = client.hunt("DeviceInfo | take 1").await?;
//! # let _ = hunt; Ok(()) }
//! ```
//!
//! The blocking client has no such bridge (the Azure SDK is async): use its own token
//! sources (`TokenSource`: certificate, workload and managed identity, Azure CLI, `auto`),
//! or a `TokenProvider` of yours.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use defender_core::token::Secret;
use defender_core::Error;

use crate::{async_trait, TokenProvider};

/// An `azure_core` [`TokenCredential`] as a [`TokenProvider`]. See the module docs.
#[derive(Debug, Clone)]
pub struct AzureCredential(Arc<dyn TokenCredential>);

impl AzureCredential {
    /// Wraps `credential`.
    pub fn new(credential: Arc<dyn TokenCredential>) -> AzureCredential {
        AzureCredential(credential)
    }
}

#[async_trait]
impl TokenProvider for AzureCredential {
    async fn token(&self, scope: &str) -> Result<(Secret, Duration), Error> {
        let token =
            self.0
                .get_token(&[scope], None)
                .await
                .map_err(|e| Error::TokenUnavailable {
                    message: format!("the Azure credential gave no token: {e}"),
                })?;
        let expires: SystemTime = token.expires_on.into();
        let lifetime = expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Ok((Secret::new(token.token.secret()), lifetime))
    }
}
