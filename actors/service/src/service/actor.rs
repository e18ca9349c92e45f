//! The endpoint actor: one per endpoint per node, supervised under its service. It admits each
//! call (or refuses it with 503) and runs it in a task of its own, so a slow, cancelled or
//! panicking handler never blocks or kills the actor.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use futures::FutureExt;
use micro_runtime::{
    Actor, ActorError, CallData, ContentType, Context, StreamSender, stream_channel,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::endpoint::{Handler, request_mismatch};
use super::stats::{Accounts, CallGuard, Counters, Drain};
use crate::body::Body;
use crate::error::SERVER_ID;
use crate::wire::{Answer, EndpointMsg, Head, Headers, StreamItem, headers_of, take_response_type};
use crate::wrapper::Next;
use crate::{BoxFuture, CallContext, Request, Response, ServiceError, Wrapper};

/// Room for requests between a stream's caller and its handler.
pub(crate) const STREAM_BUFFER: usize = 64;

/// What every incarnation of an endpoint actor shares (the factory clones it).
pub(crate) struct EndpointShared {
    pub(crate) service: Arc<str>,
    pub(crate) endpoint: Arc<str>,
    pub(crate) handler: Handler,
    pub(crate) limit: usize,
    pub(crate) counters: Arc<Counters>,
    pub(crate) drain: Arc<Drain>,
    pub(crate) wrappers: Arc<[Arc<dyn Wrapper>]>,
    /// Checks each call's token and the rules, when the service has auth.
    pub(crate) auth: Option<micro_auth::Auth>,
}

impl Accounts for EndpointShared {
    fn counters(&self) -> &Counters {
        &self.counters
    }
    fn drain(&self) -> &Drain {
        &self.drain
    }
}

pub(crate) struct EndpointActor(pub(crate) Arc<EndpointShared>);

impl Actor for EndpointActor {
    type Msg = EndpointMsg;

    async fn handle(
        &mut self,
        _ctx: &mut Context<Self>,
        msg: EndpointMsg,
    ) -> Result<(), ActorError> {
        match msg {
            EndpointMsg::Call {
                head,
                body,
                reply,
                call,
            } => {
                let shared = &self.0;
                let deadline = earliest(reply.deadline(), &call, &head);
                let (type_id, peer) = (call.type_id, call.peer);
                let metadata = headers_of(call, head.metadata);
                let account = match shared.authorize(&metadata) {
                    Ok(account) => account,
                    Err(denied) => {
                        let _ = reply.send(Err(denied));
                        return Ok(());
                    }
                };
                match CallGuard::admit(&**shared, shared.limit) {
                    Ok(guard) => {
                        let call = Call {
                            deadline,
                            content_type: head.content_type.0,
                            type_id,
                            metadata,
                            body,
                            account,
                            peer,
                        };
                        shared.serve(call, guard, reply);
                    }
                    Err(why) => {
                        let _ = reply.send(Err(ServiceError::unavailable(SERVER_ID, why)));
                    }
                }
            }
            EndpointMsg::Open {
                mut head,
                responses,
                reply,
                mut call,
            } => {
                let shared = &self.0;
                let response_id = take_response_type(&mut call);
                // The request type is checked before anything else (as a unary call's is).
                if let Handler::Stream(handler) = &shared.handler
                    && let (Some(got), (Some(expected), name)) = (call.type_id, handler.request())
                    && got != expected
                {
                    let err = request_mismatch(&shared.service, &shared.endpoint, name, got);
                    let _ = reply.send(Err(err));
                    return Ok(());
                }
                let deadline = earliest(None, &call, &head);
                let peer = call.peer;
                head.metadata = headers_of(call, head.metadata);
                let account = match shared.authorize(&head.metadata) {
                    Ok(account) => account,
                    Err(denied) => {
                        let _ = reply.send(Err(denied));
                        return Ok(());
                    }
                };
                match CallGuard::admit(shared.clone(), shared.limit) {
                    Ok(guard) => {
                        let (requests_tx, requests) = stream_channel(STREAM_BUFFER);
                        if reply.send(Ok(requests_tx)).is_err() {
                            // The caller gave up before the stream opened.
                            return Ok(());
                        }
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let outcome = shared
                                .stream(
                                    head,
                                    requests,
                                    responses,
                                    deadline,
                                    response_id,
                                    (account, peer),
                                )
                                .await;
                            guard.finished(outcome.is_err());
                        });
                    }
                    Err(why) => {
                        let _ = reply.send(Err(ServiceError::unavailable(SERVER_ID, why)));
                    }
                }
            }
        }
        Ok(())
    }
}

impl EndpointShared {
    /// The caller's account, or the call's refusal (401/403), when the service has auth.
    fn authorize(
        &self,
        metadata: &Headers,
    ) -> Result<Option<Arc<micro_auth::Account>>, ServiceError> {
        match &self.auth {
            None => Ok(None),
            Some(auth) => {
                crate::auth::authorize(auth, &self.service, &self.endpoint, metadata.get())
            }
        }
    }

    /// Runs one unary call through the wrappers and the handler, bounded by its deadline and the
    /// service's stop; a panic becomes a 500.
    ///
    /// The call runs here, in the endpoint actor, until it first waits, and only then in a task
    /// of its own: a handler that answers at once costs no task and no thread wake-up. (Futures
    /// register their wakers anew at every poll, so the task's first poll replaces what this one
    /// registered with its no-op waker.)
    fn serve(self: &Arc<Self>, call: Call, guard: CallGuard<&Self>, reply: AnswerPort) {
        let deadline = call.deadline;
        let mut run = self.start(call);
        let mut first = std::task::Context::from_waker(std::task::Waker::noop());
        match std::panic::catch_unwind(AssertUnwindSafe(|| run.as_mut().poll(&mut first))) {
            Ok(Poll::Ready(outcome)) => answer(&guard, reply, outcome),
            Ok(Poll::Pending) => {
                let shared = self.clone();
                let guard = guard.hold_by(shared.clone());
                tokio::spawn(async move {
                    let outcome = shared.bounded(run, deadline).await;
                    answer(&guard, reply, outcome);
                });
            }
            Err(panic) => answer(&guard, reply, Err(self.panicked(&*panic))),
        }
    }

    /// The call's future: the handler, inside the wrappers if there are any (they see the body
    /// as `Bytes`, which costs a copy of a small body; without them it is never converted).
    fn start(&self, call: Call) -> BoxFuture<'static, Result<Answer, ServiceError>> {
        let Handler::Unary(handler) = &self.handler else {
            let err = ServiceError::bad_request(
                &*self.service,
                format!("{} is a streaming endpoint", self.endpoint),
            );
            return Box::pin(std::future::ready(Err(err)));
        };
        if self.wrappers.is_empty() {
            let ctx = CallContext::new(
                self.service.clone(),
                self.endpoint.clone(),
                call.metadata,
                call.deadline,
            )
            .with_caller(call.account, call.peer);
            return handler.call(ctx, call.content_type, call.type_id, call.body);
        }
        let request = Request {
            service: self.service.clone(),
            endpoint: self.endpoint.clone(),
            content_type: call.content_type,
            metadata: call.metadata.into_metadata(),
            body: call.body.into_bytes(),
            deadline: call.deadline,
        };
        let (handler, wrappers) = (handler.clone(), self.wrappers.clone());
        let (account, peer) = (call.account, call.peer);
        // Checked against the body as the wrappers leave it, in the caller's content type.
        let (type_id, content_type) = (call.type_id, call.content_type);
        Box::pin(async move {
            let innermost = |request: Request| -> BoxFuture<'_, Result<Response, ServiceError>> {
                let ctx = CallContext::new(
                    request.service,
                    request.endpoint,
                    Headers::from(request.metadata),
                    request.deadline,
                )
                .with_caller(account.clone(), peer);
                let type_id = type_id.filter(|_| request.content_type == content_type);
                let run =
                    handler.call(ctx, request.content_type, type_id, Body::from(request.body));
                Box::pin(async move {
                    let answer = run.await?;
                    Ok(Response {
                        metadata: answer.metadata.into_metadata(),
                        body: answer.body.into_bytes(),
                    })
                })
            };
            let response = Next::new(&wrappers, &innermost).run(request).await?;
            Ok(Answer {
                metadata: Headers::from(response.metadata),
                body: Body::from(response.body),
            })
        })
    }

    fn panicked(&self, panic: &(dyn Any + Send)) -> ServiceError {
        let why = panic_message(panic);
        tracing::error!(service = %self.service, endpoint = %self.endpoint, panic = %why, "handler panicked");
        ServiceError::internal(&*self.service, format!("handler panicked: {why}"))
    }

    /// Runs one streaming call; ends the response stream after the handler, with its error.
    async fn stream(
        &self,
        head: Head,
        requests: micro_runtime::StreamReceiver<StreamItem>,
        responses: StreamSender<StreamItem>,
        deadline: Option<Instant>,
        response_id: Option<u64>,
        (account, peer): (
            Option<Arc<micro_auth::Account>>,
            Option<micro_runtime::NodeId>,
        ),
    ) -> Result<(), ServiceError> {
        let Handler::Stream(handler) = &self.handler else {
            let err = ServiceError::bad_request(
                &*self.service,
                format!("{} is a unary endpoint", self.endpoint),
            );
            crate::stream::close(&Arc::new(Mutex::new(Some(responses))), Err(err.clone())).await;
            return Err(err);
        };
        let responses = Arc::new(Mutex::new(Some(responses)));
        let ctx = CallContext::new(
            self.service.clone(),
            self.endpoint.clone(),
            head.metadata,
            deadline,
        )
        .with_caller(account, peer);
        let run = handler.open(
            ctx,
            head.content_type.0,
            requests,
            responses.clone(),
            response_id,
        );
        let outcome = self.bounded(run, deadline).await;
        crate::stream::close(&responses, outcome.clone()).await;
        outcome
    }

    /// Awaits a handler's future unless its deadline passes (408) or the service stops (503)
    /// first, in which case the future is dropped: the handler is cancelled.
    async fn bounded<T>(
        &self,
        run: impl std::future::Future<Output = Result<T, ServiceError>>,
        deadline: Option<Instant>,
    ) -> Result<T, ServiceError> {
        // Built lazily and polled after the handler (`biased`): a handler that is ready at once
        // never touches the timer wheel or the stop signal.
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let stopped = async {
            let mut aborted = self.drain.aborted();
            let _ = aborted.wait_for(|aborted| *aborted).await;
        };
        let run = AssertUnwindSafe(run).catch_unwind();
        tokio::select! {
            biased;
            outcome = run => outcome.unwrap_or_else(|panic| Err(self.panicked(&*panic))),
            () = expired => Err(ServiceError::timeout(
                &*self.service,
                format!("{}: the deadline passed; the handler was cancelled", self.endpoint),
            )),
            () = stopped => Err(ServiceError::unavailable(
                SERVER_ID,
                "the service stopped before the call finished",
            )),
        }
    }
}

/// A unary call as it arrived, admitted.
struct Call {
    content_type: ContentType,
    /// The shape id of the caller's request type, if it sent one (binary codecs).
    type_id: Option<u64>,
    metadata: Headers,
    body: Body,
    deadline: Option<Instant>,
    /// The caller's account (auth).
    account: Option<Arc<micro_auth::Account>>,
    /// The calling node (from the link).
    peer: Option<micro_runtime::NodeId>,
}

/// Where a unary call's answer goes.
type AnswerPort = micro_runtime::Reply<Result<Answer, ServiceError>>;

/// Counts a unary call's outcome and answers it.
fn answer<A: Accounts>(
    guard: &CallGuard<A>,
    reply: AnswerPort,
    outcome: Result<Answer, ServiceError>,
) {
    guard.finished(outcome.is_err());
    let _ = reply.send(outcome);
}

/// The earliest of the reply port's deadline, the call data's and the one the head of an older
/// node announces.
fn earliest(reply: Option<Instant>, call: &CallData, head: &Head) -> Option<Instant> {
    let announced = call
        .deadline
        .or_else(|| head.timeout().map(|t| Instant::now() + t));
    match (reply, announced) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}
