//! Deploys (issue 17) through the API: artifacts (stat, upload, download),
//! releases (create, history, show, rollback), the rollout in progress
//! (status, promote, abort) and what runs on a node.

use futures::{Stream, StreamExt};
use gantry_api::{
    ArtifactStat, MachineReleases, Release, ReleaseDetail, ReleaseHistory, ReleaseRequest, RollbackRequest, Rollout,
    RolloutStatus,
};
use reqwest::Method;

use crate::{Client, ClientError, encode_path};

impl Client {
    /// Whether the server holds artifact `sha256` of `service`.
    pub async fn artifact_stat(&self, service: &str, sha256: &str) -> Result<ArtifactStat, ClientError> {
        let path = format!("/v1/artifacts/{}/{}/stat", encode_path(service), encode_path(sha256));
        self.call(self.request(Method::GET, &path)).await
    }

    /// Uploads an artifact (its bytes must hash to `sha256`).
    pub async fn upload_artifact(
        &self,
        service: &str,
        sha256: &str,
        bytes: impl Into<reqwest::Body>,
    ) -> Result<ArtifactStat, ClientError> {
        let path = format!("/v1/artifacts/{}/{}", encode_path(service), encode_path(sha256));
        let request = self.request(Method::PUT, &path).header("content-type", "application/octet-stream").body(bytes);
        self.call(request).await
    }

    /// An artifact's bytes as they arrive, with the length the server announced.
    pub async fn download_artifact(
        &self,
        service: &str,
        sha256: &str,
    ) -> Result<(Option<u64>, impl Stream<Item = Result<bytes::Bytes, ClientError>> + use<>), ClientError> {
        let path = format!("/v1/artifacts/{}/{}", encode_path(service), encode_path(sha256));
        let response = self.send(self.request(Method::GET, &path)).await?;
        let length = response.content_length();
        let server = self.base().to_owned();
        let stream =
            response.bytes_stream().map(move |chunk| chunk.map_err(|source| Client::unreachable(&server, source)));
        Ok((length, stream))
    }

    /// Makes a release of an uploaded artifact and starts its rollout.
    pub async fn create_release(&self, service: &str, request: &ReleaseRequest) -> Result<Release, ClientError> {
        let path = format!("/v1/releases/{}", encode_path(service));
        self.call(self.request(Method::POST, &path).json(request)).await
    }

    pub async fn release_history(&self, service: &str) -> Result<ReleaseHistory, ClientError> {
        self.call(self.request(Method::GET, &format!("/v1/releases/{}", encode_path(service)))).await
    }

    pub async fn release(&self, service: &str, version: u64) -> Result<ReleaseDetail, ClientError> {
        let path = format!("/v1/releases/{}/v{version}", encode_path(service));
        self.call(self.request(Method::GET, &path)).await
    }

    pub async fn rollback(&self, service: &str, request: &RollbackRequest) -> Result<Release, ClientError> {
        let path = format!("/v1/releases/{}/rollback", encode_path(service));
        self.call(self.request(Method::POST, &path).json(request)).await
    }

    pub async fn rollout_status(&self, service: &str) -> Result<RolloutStatus, ClientError> {
        self.call(self.request(Method::GET, &format!("/v1/rollouts/{}", encode_path(service)))).await
    }

    pub async fn promote(&self, service: &str) -> Result<Rollout, ClientError> {
        self.call(self.request(Method::POST, &format!("/v1/rollouts/{}/promote", encode_path(service)))).await
    }

    pub async fn abort_rollout(&self, service: &str) -> Result<Rollout, ClientError> {
        self.call(self.request(Method::POST, &format!("/v1/rollouts/{}/abort", encode_path(service)))).await
    }

    pub async fn machine_releases(&self, machine: &str) -> Result<MachineReleases, ClientError> {
        self.call(self.request(Method::GET, &format!("/v1/agents/{}/releases", encode_path(machine)))).await
    }
}
