# Revocations live in token_revocations; the shared-memory cache starts empty
# after every server start (clean or crash) and is loaded from the table
# before its first use.  So a revocation survives restarts, a TRUNCATE
# clears it for good, databases do not share revocations, an overflowed
# cache stays exact across a restart, and an installation still at version
# 1.0 is served once it is updated.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('revocations');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->start;
foreach my $db ('app', 'other')
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION rate_limiter');
}

sub reason
{
	my ($db, $token) = @_;
	return $node->safe_psql($db, "SELECT reason FROM allocate_tokens('rv_user', 1, 'high', session_id => '$token')");
}

sub cache_state
{
	my ($db) = @_;
	return $node->safe_psql($db, 'SELECT state || \':\' || cached FROM revocation_cache_status()');
}

$node->safe_psql('app', "SELECT revoke_token('stolen', 'leaked in a log')");
is(reason('app', 'stolen'), 'revoked', 'revoked before the restart');
is(reason('other', 'stolen'), 'no_limit', 'another database does not share the revocation');

$node->restart;
is(cache_state('app'), 'not_loaded:0', 'the cache is empty after a restart');
is(reason('app', 'stolen'), 'revoked', 'still revoked after a restart: reloaded from the table');
is(cache_state('app'), 'loaded:1', 'the installation is loaded on first use');
is(reason('other', 'stolen'), 'no_limit', 'still not revoked in the other database');

# A crash (immediate stop) is the same: the table is the truth.
$node->safe_psql('app', "SELECT revoke_token('second')");
$node->stop('immediate');
$node->start;
is(reason('app', 'second'), 'revoked', 'a committed revocation survives a crash');
is(reason('app', 'stolen'), 'revoked', 'and so do the older ones');

# TRUNCATE clears every revocation, before and after a restart.
$node->safe_psql('app', 'TRUNCATE token_revocations');
is(reason('app', 'stolen'), 'no_limit', 'allowed after TRUNCATE');
$node->restart;
is(reason('app', 'stolen'), 'no_limit', 'still allowed after TRUNCATE and a restart');
$node->safe_psql('app', "SELECT revoke_token('after_truncate')");
is(reason('app', 'after_truncate'), 'revoked', 'revoking after a TRUNCATE works');
$node->restart;
is(reason('app', 'after_truncate'), 'revoked', 'and survives a restart');

# A cache smaller than the table: overflowed after the restart, still exact.
$node->append_conf('postgresql.conf', 'rate_limiter.max_revocations = 2');
$node->restart;
$node->safe_psql('app', "SELECT revoke_token('many_' || g) FROM generate_series(1, 4) g");
is($node->safe_psql('app',
	"SELECT count(*) FROM generate_series(1, 5) g, LATERAL allocate_tokens('rv_user', 1, 'high', session_id => 'many_' || g) a WHERE a.reason = 'revoked'"),
	'4', 'every revocation is enforced with a full cache');
is(cache_state('app'), 'overflowed:2', 'the cache says it overflowed');
$node->restart;
is($node->safe_psql('app',
	"SELECT count(*) FROM generate_series(1, 5) g, LATERAL allocate_tokens('rv_user', 1, 'high', session_id => 'many_' || g) a WHERE a.reason = 'revoked'"),
	'4', 'and after a restart');
is(cache_state('app'), 'overflowed:2', 'loading a larger table overflows too');
# The capacity is shared by all databases.
$node->safe_psql('other', "SELECT revoke_token('other_token')");
is(reason('other', 'other_token'), 'revoked', 'another database is enforced with the cache full');
is(cache_state('other'), 'overflowed:0', 'from the table: the cache has no room left');
$node->safe_psql($_, 'TRUNCATE token_revocations') foreach ('app', 'other');

# A database still at version 1.0 (the table, no triggers) is not served
# until ALTER EXTENSION UPDATE: then its revocations are loaded into the cache.
$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('old', "CREATE EXTENSION rate_limiter VERSION '1.0'");
$node->safe_psql('old', "INSERT INTO token_revocations (token) VALUES ('old_token')");
my ($rc, $out, $err) = $node->psql('old', "SELECT reason FROM allocate_tokens('rv_user', 1, 'high', session_id => 'old_token')");
like($err, qr/is at version 1\.0, but the library is version/, 'version 1.0: allocate_tokens asks for the update');
$node->safe_psql('old', "ALTER EXTENSION rate_limiter UPDATE");
is(reason('old', 'old_token'), 'revoked', 'after the update: loaded into the cache');
is(cache_state('old'), 'loaded:1', 'the updated installation uses the cache');
$node->safe_psql('old', "SELECT unrevoke_token('old_token')");
is(reason('old', 'old_token'), 'no_limit', 'after the update: changes reach the cache');

$node->stop;
done_testing();
