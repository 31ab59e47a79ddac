// Socket reads that tell Asio's reactor when they drained the socket, so that the next read on
// it waits for epoll instead of trying a recv() that fails with EAGAIN. Used by worker.cpp for
// plain-TCP reads on the request path. Thread-safety: the same as the socket's own operations.
//
// Why: Asio's epoll reactor tries every read at once ("speculatively") unless the previous read
// on the descriptor reported the socket exhausted, which Boost 1.81 does only for a read of 0
// bytes (EOF). On a keep-alive connection the read of the next request and the read of the
// target's answer start just after a write, before the peer can have answered, so each of them
// cost one recv() that failed with EAGAIN: 1.6 of the 3.6 recv() per proxied request under
// bench/proxy (HAProxy makes 2, none failing). A short read of a stream socket means the receive
// queue was empty when recv() returned; anything arriving after it raises a new edge-triggered
// epoll event, which re-enables speculation (epoll_reactor::descriptor_state::perform_io), so no
// wake-up is lost. Reads that fill the buffer keep speculating (a body streams on without a
// round through epoll_wait).
//
// How: the reactor's read operation is Asio's class template reactive_socket_recv_op_base,
// parameterized by the buffer sequence type; it is specialized below for DrainingBuffer, a
// one-buffer sequence, with the one change in do_perform(). Everything else (handler
// allocation, cancellation, completion, the coroutine glue) is Asio's own. The specialization
// copies Boost 1.81's class; other Boost versions fall back to plain reads (DrainingBuffer is
// then an ordinary buffer sequence) until the copy is checked against them.
#pragma once

#include <boost/asio/buffer.hpp>
#include <boost/asio/socket_base.hpp>  // before the detail headers below, which need it
#include <boost/version.hpp>

#if BOOST_VERSION >= 108100 && BOOST_VERSION < 108200
#define CUTOVER_DRAINING_READ 1
#include <boost/asio/detail/reactive_socket_recv_op.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/detail/socket_ops.hpp>
#else
#define CUTOVER_DRAINING_READ 0
#endif

namespace cutover::proxy::detail {

// A MutableBufferSequence of one buffer; reads into it report a short read as draining the
// socket (see above).
struct DrainingBuffer {
  boost::asio::mutable_buffer buffer;
  const boost::asio::mutable_buffer* begin() const { return &buffer; }
  const boost::asio::mutable_buffer* end() const { return &buffer + 1; }
};

inline DrainingBuffer draining(boost::asio::mutable_buffer b) { return DrainingBuffer{b}; }

}  // namespace cutover::proxy::detail

#if CUTOVER_DRAINING_READ
namespace boost::asio::detail {

template <>
class reactive_socket_recv_op_base<cutover::proxy::detail::DrainingBuffer> : public reactor_op {
 public:
  reactive_socket_recv_op_base(const boost::system::error_code& success_ec, socket_type socket,
                               socket_ops::state_type state,
                               const cutover::proxy::detail::DrainingBuffer& buffers,
                               socket_base::message_flags flags, func_type complete_func)
      : reactor_op(success_ec, &reactive_socket_recv_op_base::do_perform, complete_func),
        socket_(socket),
        state_(state),
        buffers_(buffers),
        flags_(flags) {}

  static status do_perform(reactor_op* base) {
    auto* o = static_cast<reactive_socket_recv_op_base*>(base);
    const bool stream = (o->state_ & socket_ops::stream_oriented) != 0;
    const size_t want = o->buffers_.buffer.size();
    if (!socket_ops::non_blocking_recv1(o->socket_, o->buffers_.buffer.data(), want, o->flags_,
                                        stream, o->ec_, o->bytes_transferred_)) {
      return not_done;  // EAGAIN: the reactor queues the read until epoll reports data
    }
    // Asio's rule (EOF) plus a successful short read of a stream: the receive queue is empty.
    if (stream && (o->bytes_transferred_ == 0 || (!o->ec_ && o->bytes_transferred_ < want))) {
      return done_and_exhausted;
    }
    return done;
  }

 private:
  socket_type socket_;
  socket_ops::state_type state_;
  cutover::proxy::detail::DrainingBuffer buffers_;
  socket_base::message_flags flags_;
};

}  // namespace boost::asio::detail
#endif
