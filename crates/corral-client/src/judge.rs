//! The judge and the code library: `corral judge` and `corral library`.

use reqwest::Method;

use corral_types::executions::{
    CreateExecutionRequest, ExecutionResponse, LanguageResponse, RunSnippetRequest,
};
use corral_types::library::{CreateSnippetRequest, SnippetPage, SnippetResponse};

use crate::{Client, Result};

/// Which snippets `GET /api/v1/library` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LibraryFilter {
    /// Text in the title, description or code.
    pub q: Option<String>,
    /// Only snippets with this tag.
    pub tag: Option<String>,
    /// Only snippets in this language.
    pub language: Option<String>,
    /// Only the caller's own.
    pub mine: bool,
}

impl Client {
    /// `GET /api/v1/languages`: what executions can run.
    pub async fn languages(&self) -> Result<Vec<LanguageResponse>> {
        self.get(&["languages"]).await
    }

    /// `POST /api/v1/executions`: submits a run (with `wait`, answers with
    /// the verdict).
    pub async fn create_execution(
        &self,
        request: &CreateExecutionRequest,
    ) -> Result<ExecutionResponse> {
        self.post(&["executions"], request).await
    }

    /// `GET /api/v1/executions/{id}`.
    pub async fn execution(&self, id: &str) -> Result<ExecutionResponse> {
        self.get(&["executions", id]).await
    }

    /// `POST /api/v1/library`: saves a snippet.
    pub async fn create_snippet(&self, request: &CreateSnippetRequest) -> Result<SnippetResponse> {
        self.post(&["library"], request).await
    }

    /// `GET /api/v1/library/{id}`.
    pub async fn snippet(&self, id: &str) -> Result<SnippetResponse> {
        self.get(&["library", id]).await
    }

    /// `DELETE /api/v1/library/{id}`.
    pub async fn delete_snippet(&self, id: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, self.url(&["library", id])))
            .await
            .map(drop)
    }

    /// `GET /api/v1/library`: one page, from `cursor`.
    pub async fn list_snippets(
        &self,
        filter: &LibraryFilter,
        cursor: Option<&str>,
    ) -> Result<SnippetPage> {
        let mut url = self.url(&["library"]);
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in [
                ("q", &filter.q),
                ("tag", &filter.tag),
                ("language", &filter.language),
            ] {
                if let Some(value) = value {
                    query.append_pair(name, value);
                }
            }
            if filter.mine {
                query.append_pair("owner", "me");
            }
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.json(self.request(Method::GET, url)).await
    }

    /// `POST /api/v1/library/{id}/run`.
    pub async fn run_snippet(
        &self,
        id: &str,
        request: &RunSnippetRequest,
    ) -> Result<ExecutionResponse> {
        self.post(&["library", id, "run"], request).await
    }
}
