# rate_limiter.log_decisions and rate_limiter.log_decisions_sample_rate:
# one LOG line per decision of allocate_tokens, check_rate_limit,
# enforce_rate_limit and rate_limit_trigger, in a fixed format; nothing with
# "off"; only superusers may change them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('decision_log');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->append_conf('postgresql.conf', "rate_limiter.usage_log = sync");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');
$node->safe_psql('postgres', q{
	SELECT set_user_rate_limit('dl_user', 2, '1 minute');
	SELECT set_rate_limit('dl_user', 100, '1 hour', api_endpoint => 'chat');
	SELECT set_user_rate_limit('dl_other', 1000, '1 hour');
});

# Runs the SQL in one session with the limiter's clock frozen at
# 2027-01-15 08:00:00 UTC and returns the decision lines it logged (the
# part after "LOG:  ").
sub decisions
{
	my ($settings, $sql) = @_;
	my $offset = -s $node->logfile;
	$node->psql('postgres', "SET rate_limiter.debug_clock = 1800000000; $settings $sql");
	my $log = slurp_file($node->logfile, $offset);
	return [ $log =~ /LOG:  (rate_limiter decision: [^\n]*)/g ];
}

# off (the default): nothing, whatever the outcome.
is_deeply(decisions('', q{
	SELECT * FROM check_rate_limit('dl_other');
	SELECT * FROM allocate_tokens('dl_other', 5);}), [], 'off: no decision is logged');
is($node->safe_psql('postgres', 'SHOW rate_limiter.log_decisions'), 'off', 'off is the default');
is($node->safe_psql('postgres', 'SHOW rate_limiter.log_decisions_sample_rate'), '1',
	'the sample rate is 1 by default');

# denied: the two allowed checks log nothing, the third (denied) does, and
# so does enforce_rate_limit before it raises RL429.
is_deeply(decisions("SET rate_limiter.log_decisions = 'denied';", q{
	SELECT * FROM check_rate_limit('dl_user');
	SELECT * FROM check_rate_limit('dl_user');
	SELECT * FROM check_rate_limit('dl_user');
	SELECT * FROM enforce_rate_limit('dl_user');}),
	[ 'rate_limiter decision: function=check_rate_limit user="dl_user" endpoint=none outcome=denied '
		  . 'reason=request_limit_exceeded scope=user kind=requests limit=2 remaining=0 strategy=none '
		  . 'requested=none granted=0 retry_after=60.000s',
	  'rate_limiter decision: function=enforce_rate_limit user="dl_user" endpoint=none outcome=denied '
		  . 'reason=request_limit_exceeded scope=user kind=requests limit=2 remaining=0 strategy=none '
		  . 'requested=none granted=0 retry_after=60.000s' ],
	'denied: one line per denial, none for allowed calls');

# all: an allowed grant (the user_endpoint quota binds; the request limit
# is used up, so first a reset), a partial grant and a call without limits.
$node->safe_psql('postgres', "SELECT reset_rate_limit('dl_user')");
is_deeply(decisions("SET rate_limiter.log_decisions = 'all';", q{
	SELECT * FROM allocate_tokens('dl_user', 40, 'high', 'chat');
	SELECT * FROM allocate_tokens('dl_user', 40, 'low', 'chat');
	SELECT * FROM check_rate_limit('dl_nobody', 'chat');}),
	[ 'rate_limiter decision: function=allocate_tokens user="dl_user" endpoint="chat" outcome=allowed '
		  . 'reason=granted scope=user_endpoint kind=tokens limit=100 remaining=60 strategy=priority '
		  . 'requested=40 granted=40 retry_after=none',
	  'rate_limiter decision: function=allocate_tokens user="dl_user" endpoint="chat" outcome=allowed '
		  . 'reason=partial_grant scope=user_endpoint kind=tokens limit=100 remaining=48 strategy=priority '
		  . 'requested=40 granted=12 retry_after=none',
	  'rate_limiter decision: function=check_rate_limit user="dl_nobody" endpoint="chat" outcome=allowed '
		  . 'reason=no_limit scope=none kind=none limit=none remaining=none strategy=none '
		  . 'requested=none granted=0 retry_after=none' ],
	'all: every decision, with the binding limit, strategy and grant');

# An id cannot forge fields or lines: quotes, backslashes and control
# characters are escaped.
is_deeply(decisions("SET rate_limiter.log_decisions = 'all';",
	q{SELECT * FROM check_rate_limit(E'a"b\\\\c\nd');}),
	[ 'rate_limiter decision: function=check_rate_limit user="a\"b\\\\c\x0ad" endpoint=none outcome=allowed '
		  . 'reason=no_limit scope=none kind=none limit=none remaining=none strategy=none '
		  . 'requested=none granted=0 retry_after=none' ],
	'ids are quoted and escaped');

# A revoked session is a decision too, with no limit consulted.
$node->safe_psql('postgres', "SELECT revoke_token('dl_session', 'test')");
is_deeply(decisions("SET rate_limiter.log_decisions = 'denied';",
	q{SELECT * FROM allocate_tokens('dl_other', 5, session_id => 'dl_session');}),
	[ 'rate_limiter decision: function=allocate_tokens user="dl_other" endpoint=none outcome=denied '
		  . 'reason=revoked scope=none kind=none limit=none remaining=none strategy=none '
		  . 'requested=5 granted=0 retry_after=none' ],
	'a revoked session is logged as a denial');

# rate_limit_trigger decides through enforce_rate_limit / allocate_tokens:
# each row's decision is logged.
$node->safe_psql('postgres', q{
	CREATE TABLE dl_calls (author text, cost bigint);
	CREATE TRIGGER dl_calls_quota BEFORE INSERT ON dl_calls
	  FOR EACH ROW EXECUTE FUNCTION rate_limit_trigger('author', 'chat', 'cost');});
my $lines = decisions("SET rate_limiter.log_decisions = 'all';",
	q{INSERT INTO dl_calls VALUES ('dl_other', 7), ('dl_other', 8);});
is(scalar(@$lines), 2, 'the trigger logs one decision per row');
like($lines->[0], qr/^rate_limiter decision: function=allocate_tokens user="dl_other" endpoint="chat" outcome=allowed .* requested=7 granted=7 /,
	'the trigger row is logged with its cost');

# The sample rate: 0 logs nothing even with "all"; 1 logs everything.
is_deeply(decisions("SET rate_limiter.log_decisions = 'all'; SET rate_limiter.log_decisions_sample_rate = 0;",
	q{SELECT * FROM check_rate_limit('dl_other');}), [], 'sample rate 0: nothing is logged');
$lines = decisions("SET rate_limiter.log_decisions = 'all'; SET rate_limiter.log_decisions_sample_rate = 0.5;",
	q{SELECT count((check_rate_limit('dl_other')).allowed) FROM generate_series(1, 400);});
my $n = scalar(@$lines);
ok($n > 100 && $n < 300, "sample rate 0.5: about half of 400 decisions are logged ($n)");

# Superuser only: a plain role may not change either setting.
$node->safe_psql('postgres', 'CREATE ROLE dl_app LOGIN');
foreach my $setting ("rate_limiter.log_decisions = 'all'", 'rate_limiter.log_decisions_sample_rate = 0.5')
{
	my ($ret, $out, $err) = $node->psql('postgres', "SET $setting", extra_params => [ '-U', 'dl_app', '-v', 'VERBOSITY=verbose' ]);
	isnt($ret, 0, "a plain role cannot SET $setting");
	like($err, qr/42501/, "SET $setting by a plain role raises 42501");
}
# Bad values are refused.
my ($ret, $out, $err) = $node->psql('postgres', "SET rate_limiter.log_decisions = 'some'");
like($err, qr/invalid value for parameter "rate_limiter.log_decisions"/, 'an unknown mode is refused');
($ret, $out, $err) = $node->psql('postgres', 'SET rate_limiter.log_decisions_sample_rate = 1.5');
like($err, qr/1.5 is outside the valid range/, 'a sample rate above 1 is refused');

$node->stop;
done_testing();
