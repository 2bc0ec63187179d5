// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title TempoSessionEscrow
/// @notice Payment-channel escrow for the MPP `session` intent on Tempo (contract-backed channel
/// state, `sessionProtocol` "v1"). A payer deposits a TIP-20 token into a channel towards one
/// payee, then pays off chain with EIP-712 vouchers that carry a cumulative amount; the payee
/// redeems the highest voucher with `settle` (channel stays open) or `close` (remainder refunded).
/// A payer whose payee disappears calls `requestClose`, waits `CLOSE_GRACE_PERIOD`, then
/// `withdraw`s what was not settled.
/// @dev Written for hono-mpp from the interface in draft-tempo-session-00 ("Channel Escrow
/// Contract", "Voucher Signing Format") and the ABI the reference client calls; function
/// selectors, events, the channel id and the EIP-712 domain are those of that interface.
contract TempoSessionEscrow {
    /// @notice State of one channel. Field order is the order of the reference ABI's tuple.
    struct Channel {
        bool finalized;
        uint64 closeRequestedAt;
        address payer;
        address payee;
        address token;
        address authorizedSigner;
        uint128 deposit;
        uint128 settled;
    }

    /// @notice Time the payee has to settle after the payer requested a forced close.
    uint64 public constant CLOSE_GRACE_PERIOD = 15 minutes;

    /// @notice keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)")
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)");

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("Tempo Stream Channel");
    bytes32 private constant VERSION_HASH = keccak256("1");

    /// @dev secp256k1 order / 2: signatures with a larger `s` are the malleable twin and rejected.
    uint256 private constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    uint256 private immutable cachedChainId;
    bytes32 private immutable cachedDomainSeparator;

    /// @notice Channels by id. A finalized channel keeps its record, so its id can never be
    /// opened again (its old vouchers would otherwise become redeemable a second time).
    mapping(bytes32 => Channel) public channels;

    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        address token,
        address authorizedSigner,
        bytes32 salt,
        uint256 deposit
    );
    event Settled(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint256 cumulativeAmount,
        uint256 deltaPaid,
        uint256 newSettled
    );
    event CloseRequested(bytes32 indexed channelId, address indexed payer, address indexed payee, uint256 closeGraceEnd);
    event CloseRequestCancelled(bytes32 indexed channelId, address indexed payer, address indexed payee);
    event TopUp(
        bytes32 indexed channelId, address indexed payer, address indexed payee, uint256 additionalDeposit, uint256 newDeposit
    );
    /// @notice `settledToPayee` is the channel's total paid to the payee over its life and
    /// `refundedToPayer` what went back to the payer; together they equal the deposit.
    event ChannelClosed(
        bytes32 indexed channelId, address indexed payer, address indexed payee, uint256 settledToPayee, uint256 refundedToPayer
    );

    error ChannelAlreadyExists();
    error ChannelNotFound();
    error ChannelFinalized();
    error InvalidSignature();
    error AmountExceedsDeposit();
    error AmountNotIncreasing();
    error NotPayer();
    error NotPayee();
    error TransferFailed();
    error CloseNotReady();
    error DepositOverflow();
    error InvalidPayee();

    constructor() {
        cachedChainId = block.chainid;
        cachedDomainSeparator = _buildDomainSeparator();
    }

    // ---------------------------------------------------------------- payer

    /// @notice Opens a channel from the caller (the payer) to `payee`, pulling `deposit` of
    /// `token` from the caller (who must have approved this contract for it).
    /// @param authorizedSigner key allowed to sign vouchers; zero means the payer itself.
    function open(address payee, address token, uint128 deposit, bytes32 salt, address authorizedSigner)
        external
        returns (bytes32 channelId)
    {
        if (payee == address(0)) revert InvalidPayee();
        channelId = computeChannelId(msg.sender, payee, token, salt, authorizedSigner);
        if (channels[channelId].payer != address(0)) revert ChannelAlreadyExists();
        channels[channelId] = Channel({
            finalized: false,
            closeRequestedAt: 0,
            payer: msg.sender,
            payee: payee,
            token: token,
            authorizedSigner: authorizedSigner,
            deposit: deposit,
            settled: 0
        });
        _pull(token, msg.sender, deposit);
        emit ChannelOpened(channelId, msg.sender, payee, token, authorizedSigner, salt, deposit);
    }

    /// @notice Adds `additionalDeposit` to the caller's open channel; cancels a pending close request.
    function topUp(bytes32 channelId, uint256 additionalDeposit) external {
        Channel storage channel = _live(channelId);
        if (msg.sender != channel.payer) revert NotPayer();
        uint256 newDeposit = uint256(channel.deposit) + additionalDeposit;
        if (newDeposit > type(uint128).max) revert DepositOverflow();
        channel.deposit = uint128(newDeposit);
        if (channel.closeRequestedAt != 0) {
            channel.closeRequestedAt = 0;
            emit CloseRequestCancelled(channelId, channel.payer, channel.payee);
        }
        _pull(channel.token, msg.sender, additionalDeposit);
        emit TopUp(channelId, channel.payer, channel.payee, additionalDeposit, newDeposit);
    }

    /// @notice Starts the grace period after which the payer may withdraw. A second request
    /// while one is pending changes nothing (the grace period is not restarted).
    function requestClose(bytes32 channelId) external {
        Channel storage channel = _live(channelId);
        if (msg.sender != channel.payer) revert NotPayer();
        if (channel.closeRequestedAt != 0) return;
        channel.closeRequestedAt = uint64(block.timestamp);
        emit CloseRequested(channelId, channel.payer, channel.payee, block.timestamp + CLOSE_GRACE_PERIOD);
    }

    /// @notice After the grace period, refunds the payer everything not settled and finalizes.
    function withdraw(bytes32 channelId) external {
        Channel storage channel = _live(channelId);
        if (msg.sender != channel.payer) revert NotPayer();
        uint256 requestedAt = channel.closeRequestedAt;
        if (requestedAt == 0 || block.timestamp < requestedAt + CLOSE_GRACE_PERIOD) revert CloseNotReady();
        _finalize(channelId, channel);
    }

    // ---------------------------------------------------------------- payee

    /// @notice Pays the payee `cumulativeAmount - settled` on a voucher, leaving the channel open.
    function settle(bytes32 channelId, uint128 cumulativeAmount, bytes calldata signature) external {
        Channel storage channel = _live(channelId);
        if (msg.sender != channel.payee) revert NotPayee();
        if (cumulativeAmount <= channel.settled) revert AmountNotIncreasing();
        _redeem(channelId, channel, cumulativeAmount, signature);
    }

    /// @notice Closes the channel: pays the payee up to `cumulativeAmount` (a voucher above what
    /// was settled needs a valid signature; at or below it, nothing more is paid and the
    /// signature is not needed) and refunds the rest of the deposit to the payer.
    function close(bytes32 channelId, uint128 cumulativeAmount, bytes calldata signature) external {
        Channel storage channel = _live(channelId);
        if (msg.sender != channel.payee) revert NotPayee();
        if (cumulativeAmount > channel.settled) _redeem(channelId, channel, cumulativeAmount, signature);
        _finalize(channelId, channel);
    }

    // ---------------------------------------------------------------- views

    function getChannel(bytes32 channelId) external view returns (Channel memory) {
        return channels[channelId];
    }

    function getChannelsBatch(bytes32[] calldata channelIds) external view returns (Channel[] memory channelStates) {
        channelStates = new Channel[](channelIds.length);
        for (uint256 i = 0; i < channelIds.length; i++) {
            channelStates[i] = channels[channelIds[i]];
        }
    }

    /// @notice keccak256(abi.encode(payer, payee, token, salt, authorizedSigner, this, chainid)).
    function computeChannelId(address payer, address payee, address token, bytes32 salt, address authorizedSigner)
        public
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(payer, payee, token, salt, authorizedSigner, address(this), block.chainid));
    }

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == cachedChainId ? cachedDomainSeparator : _buildDomainSeparator();
    }

    /// @notice The EIP-712 digest a voucher signer signs.
    function getVoucherDigest(bytes32 channelId, uint128 cumulativeAmount) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, cumulativeAmount));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), structHash));
    }

    /// @notice EIP-5267: the domain wallets and libraries read to sign vouchers.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", "Tempo Stream Channel", "1", block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    // ---------------------------------------------------------------- internals

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// @dev The channel, which must exist and not be finalized.
    function _live(bytes32 channelId) private view returns (Channel storage channel) {
        channel = channels[channelId];
        if (channel.payer == address(0)) revert ChannelNotFound();
        if (channel.finalized) revert ChannelFinalized();
    }

    /// @dev Checks a voucher above `settled` and pays the payee the difference.
    function _redeem(bytes32 channelId, Channel storage channel, uint128 cumulativeAmount, bytes calldata signature)
        private
    {
        if (cumulativeAmount > channel.deposit) revert AmountExceedsDeposit();
        address expected = channel.authorizedSigner == address(0) ? channel.payer : channel.authorizedSigner;
        if (_recover(getVoucherDigest(channelId, cumulativeAmount), signature) != expected) revert InvalidSignature();
        uint128 delta = cumulativeAmount - channel.settled;
        channel.settled = cumulativeAmount;
        _push(channel.token, channel.payee, delta);
        emit Settled(channelId, channel.payer, channel.payee, cumulativeAmount, delta, cumulativeAmount);
    }

    /// @dev Refunds the unsettled deposit to the payer and finalizes the channel.
    function _finalize(bytes32 channelId, Channel storage channel) private {
        uint128 refund = channel.deposit - channel.settled;
        channel.finalized = true;
        channel.closeRequestedAt = 0;
        _push(channel.token, channel.payer, refund);
        emit ChannelClosed(channelId, channel.payer, channel.payee, channel.settled, refund);
    }

    /// @dev ECDSA recovery over a 65-byte (r, s, v with v 27/28) or 64-byte EIP-2098 signature,
    /// rejecting high-s. Returns address(0) on any malformed input (never a valid expected signer).
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        if (signature.length == 65) {
            r = bytes32(signature[0:32]);
            s = bytes32(signature[32:64]);
            v = uint8(signature[64]);
        } else if (signature.length == 64) {
            r = bytes32(signature[0:32]);
            bytes32 vs = bytes32(signature[32:64]);
            s = vs & bytes32(0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff);
            v = uint8(uint256(vs) >> 255) + 27;
        } else {
            return address(0);
        }
        if (uint256(s) > HALF_ORDER) return address(0);
        if (v != 27 && v != 28) return address(0);
        return ecrecover(digest, v, r, s);
    }

    /// @dev Pulls exactly `amount` of `token` from `from`; the balance must grow by exactly that
    /// much, which also rejects an address without token code (whose calls "succeed" silently).
    function _pull(address token, address from, uint256 amount) private {
        if (amount == 0) return;
        uint256 before = _balance(token);
        (bool ok, bytes memory data) =
            token.call(abi.encodeWithSelector(0x23b872dd, from, address(this), amount)); // transferFrom
        if (!ok || (data.length != 0 && !abi.decode(data, (bool)))) revert TransferFailed();
        if (_balance(token) != before + amount) revert TransferFailed();
    }

    /// @dev Sends `amount` of `token` to `to`.
    function _push(address token, address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok, bytes memory data) = token.call(abi.encodeWithSelector(0xa9059cbb, to, amount)); // transfer
        if (!ok || (data.length != 0 && !abi.decode(data, (bool)))) revert TransferFailed();
    }

    function _balance(address token) private view returns (uint256) {
        (bool ok, bytes memory data) = token.staticcall(abi.encodeWithSelector(0x70a08231, address(this))); // balanceOf
        if (!ok || data.length < 32) revert TransferFailed();
        return abi.decode(data, (uint256));
    }
}
